//! Opening GGUF files: every failure becomes a [`ModelError`] that names the file and the problem.
//!
//! The header and metadata are read once; tensors are loaded on demand by the architecture code.
//! A file is checked up front for every tensor's byte range, so a truncated download is reported
//! when the file is opened, not half way through loading it.

use crate::error::{ModelError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Capacity [`GgufFile::raw`] leaves after a tensor's bytes: more than 7 rows of any shipped
/// model's widest row (the kernels pad to whole panels of 8 rows in place).
const SPARE_BYTES: usize = 1 << 20;

/// Asks Linux to back the first `len` bytes of `v`'s (not yet touched) buffer with 2 MiB pages
/// where whole ones fit. Decoding reads every weight once a token; with 4 KiB pages that is a
/// TLB miss every 4 KiB (each a two-level page walk in a VM). With transparent huge pages on
/// `madvise` (Ubuntu's and Debian's default), 2026-12-06, Intel Xeon VM, 1.5B, 3 runs each
/// alternated: decode 18.2–20.9 → 21.0–22.7 tok/s on `avx2`, 19.4–19.7 → 20.2–20.4 on
/// `avx512vnni`. Loading sometimes took 1.1 s → 1.3–2.6 s there, in the zeroing of fresh
/// 2 MiB pages (a guess: in that VM, whose balloon device may hand free 2 MiB blocks back to
/// the host, such pages fault to the host; on bare metal zeroing is the same work for either
/// page size); later runs loaded in 0.9–1.0 s. A hint: where the kernel declines, nothing
/// changes but the speed.
fn huge_pages_for(v: &Vec<u8>, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (at, end) = (
            v.as_ptr() as usize,
            v.as_ptr() as usize + len.min(v.capacity()),
        );
        let (from, to) = (at.next_multiple_of(PAGE), end / PAGE * PAGE);
        if to > from {
            // SAFETY: [from, to) lies inside `v`'s allocation, page-aligned; MADV_HUGEPAGE
            // changes how its pages are backed, never their contents or the mapping.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (v, len);
}

pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub file_size: u64,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let unreadable = |e: std::io::Error| ModelError::Unreadable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(unreadable(e)),
        };
        if meta.is_dir() {
            return Err(ModelError::Unreadable {
                path: path.to_path_buf(),
                detail: "it is a directory".into(),
            });
        }
        let mut file = File::open(path).map_err(unreadable)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(unreadable)?;
        if n < 4 || &magic != MAGIC {
            return Err(ModelError::NotGguf {
                path: path.to_path_buf(),
            });
        }
        let mut reader = BufReader::new(File::open(path).map_err(unreadable)?);
        let content = Content::read(&mut reader).map_err(|e| {
            let detail = first_line(&e.to_string());
            if detail.contains("fill whole buffer") || detail.contains("remaining") {
                ModelError::Truncated {
                    path: path.to_path_buf(),
                    detail: format!("header ends early ({detail})"),
                }
            } else {
                ModelError::Corrupt {
                    path: path.to_path_buf(),
                    detail,
                }
            }
        })?;
        let file_size = meta.len();
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if !elems.is_multiple_of(block) {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor {name} has {elems} elements, not a multiple of {block}"
                    ),
                });
            }
            let size = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + size;
            if end > file_size {
                return Err(ModelError::Truncated {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor {name} ends at byte {end} but the file has {file_size} bytes"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file_size,
            reader,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
            .ok_or_else(|| missing(key))
    }

    /// Integer metadata of any width.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| missing(key))?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            _ => return Err(missing(key)),
        };
        Ok(n as usize)
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(x)) => Ok(*x),
            Some(Value::F64(x)) => Ok(*x as f32),
            _ => Err(missing(key)),
        }
    }

    pub fn architecture(&self) -> Result<&str> {
        self.str("general.architecture")
    }

    /// A human name for the model: `general.name`, else the file name.
    pub fn model_name(&self) -> String {
        self.str("general.name")
            .map(str::to_string)
            .unwrap_or_else(|_| {
                self.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's storage type, shape (candle order: outermost first) and raw bytes, read straight
    /// from the file with no intermediate copy.
    pub fn raw(&mut self, name: &str) -> Result<(GgmlDType, Vec<usize>, Vec<u8>)> {
        use std::io::{Seek, SeekFrom};
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::Corrupt {
                path: self.path.clone(),
                detail: format!("tensor {name} is missing"),
            })?;
        let (dtype, dims) = (info.ggml_dtype, info.shape.dims().to_vec());
        let size = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        // Room for the kernels' padding rows (`kernels::QWeight::new`), so that it never moves.
        let mut bytes = Vec::with_capacity(size + SPARE_BYTES);
        huge_pages_for(&bytes, size);
        let start = self.content.tensor_data_offset + info.offset;
        let io = |e: std::io::Error| ModelError::Unreadable {
            path: self.path.clone(),
            detail: format!("tensor {name}: {e}"),
        };
        self.reader.seek(SeekFrom::Start(start)).map_err(io)?;
        // Straight into the buffer's untouched pages (no zeroing pass before the read).
        (&mut self.reader)
            .take(size as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() != size {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok((dtype, dims, bytes))
    }

    pub fn dtype(&self, name: &str) -> Option<GgmlDType> {
        self.content.tensor_infos.get(name).map(|i| i.ggml_dtype)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(ModelError::Corrupt {
                path: self.path.clone(),
                detail: format!("tensor {name} is missing"),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| ModelError::Corrupt {
                path: self.path.clone(),
                detail: format!("tensor {name}: {}", first_line(&e.to_string())),
            })
    }
}

fn missing(key: &str) -> ModelError {
    ModelError::Metadata { key: key.into() }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
