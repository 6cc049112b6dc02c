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
        let mut bytes = vec![0u8; size];
        let start = self.content.tensor_data_offset + info.offset;
        let io = |e: std::io::Error| ModelError::Unreadable {
            path: self.path.clone(),
            detail: format!("tensor {name}: {e}"),
        };
        self.reader.seek(SeekFrom::Start(start)).map_err(io)?;
        self.reader.read_exact(&mut bytes).map_err(io)?;
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
