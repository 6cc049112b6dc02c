//! Quantized weights × activations on the CPU, and the causal attention over the KV cache.
//!
//! Every weight format of the shipped models runs here: Q4_0, Q5_0, Q8_0, Q4_K and Q6_K. A
//! weight row is decoded into unsigned 8-bit codes `u`, one scale `a` per 32 values (per 16 for
//! Q6_K) and, for Q4_K, one minimum term `mn` per 32: `x = a·(u − c) + mn`, with `c` the
//! format's offset (Q4_0: 8, Q5_0: 16, Q6_K: 32, Q8_0: 128, Q4_K: 0). Activations are
//! quantized per 32-block as `y = d·q` (`q` i8, |q| ≤ 127). So a scale's span gives
//! `Σ x·y = a·d·(Σ u·q − c·Σq) + mn·d·Σq`: an exact integer dot, then
//! `acc = fma(dot, a·d, acc)` and, with a minimum, `acc = fma(Σq, mn·d, acc)`, span after
//! span. [`dot_scalar`] is that order written plainly; every SIMD path computes the same
//! integers and the same float operations in the same order, so every path equals it bit for
//! bit, and one activation row gives what it gives inside a batch (speculative decoding and
//! prompt-cache reuse rely on that).
//!
//! The paths ([`Path`]), one portable binary, chosen at run time by the CPU's features or by
//! `NIB_KERNELS`:
//! - `avx512vnni`: 16 lanes, `vpdpbusd` (64 u8×i8 products an instruction); `avx512.rs`. Its
//!   512-bit kernel prefills Q5_0 and Q8_0; decoding and the other formats take the 256-bit
//!   kernels below with the EVEX `vpdpbusd`.
//! - `avxvnni`: 8 lanes, `vpdpbusd` (VEX on CPUs with AVX-VNNI, such as Intel's since Alder
//!   Lake; EVEX through AVX-512 VL on CPUs that have that instead); `avx2.rs`.
//! - `avx2`: 8 lanes, `vpmaddubsw` + `vpmaddwd` (exact while a pair of products fits 16 bits:
//!   codes up to 63; Q8_0's codes are taken signed, `|w|·sign(q, w)`); `avx2.rs`.
//! - `neon-i8mm`, `neon-dotprod`, `neon` (aarch64): `smmla` on two activation rows at a time
//!   (prefill), `sdot` by element, or `smull` + `sadalp`, on each panel's blocks decoded once;
//!   `neon.rs`.
//! - `scalar`: the reference, and the path of every other CPU.
//!
//! The weights are stored in panels of 8 rows ([`QWeight`]), so that each 32-bit lane of a
//! register belongs to one weight row. Prefill (4 or more activation rows) decodes a tile of
//! panels once and dots it with every activation row while it sits in cache; decoding (fewer
//! than 4 rows) dots each panel's blocks as it reads them, one row's integer per lane. The work
//! runs on candle's worker pool, so the two never compete for the cores.
//!
//! Nothing here is unsound to call from safe code: the fields are private, the public
//! functions check every length they rely on with `assert!`, and each unsafe block names the
//! bound it relies on.
#![deny(unsafe_op_in_unsafe_fn)]

use half::f16;

mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::PREFETCH_BYTES;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use attention::{attention, fast_exp};

/// Elements per quantization block (Q4_0, Q5_0, Q8_0, a Q4_K sub-block, the activations).
pub const QK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    /// Bytes of one stored block.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q5_0 => 22,
            Format::Q8_0 => 34,
            Format::Q4K => 144,
            Format::Q6K => 210,
        }
    }

    /// Values in one stored block.
    pub fn block_elems(self) -> usize {
        match self {
            Format::Q4K | Format::Q6K => 256,
            _ => QK,
        }
    }

    /// Stored bytes of `elems` values (a whole number of blocks).
    fn bytes_for(self, elems: usize) -> usize {
        elems / self.block_elems() * self.block_bytes()
    }

    /// The unsigned codes' offset `c`: `x = a·(u − c) + mn`.
    fn offset(self) -> i32 {
        match self {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            Format::Q8_0 => 128,
            Format::Q4K => 0,
            Format::Q6K => 32,
        }
    }

    /// Values per scale `a`: 32, or 16 for Q6_K (two scales per 32-block).
    pub fn span(self) -> usize {
        match self {
            Format::Q6K => 16,
            _ => QK,
        }
    }

    /// Whether blocks carry a minimum term `mn`.
    fn has_min(self) -> bool {
        self == Format::Q4K
    }

    /// The largest code: AVX2's 16-bit pair sums stay exact up to 128; NEON takes codes as
    /// signed bytes.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    fn max_code(self) -> u8 {
        match self {
            Format::Q4_0 | Format::Q4K => 15,
            Format::Q5_0 => 31,
            Format::Q6K => 63,
            Format::Q8_0 => 255,
        }
    }
}

/// A kernel path: the instructions the quantized matmul runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Avx512Vnni,
    AvxVnni,
    Avx2,
    NeonI8mm,
    NeonDotprod,
    Neon,
    Scalar,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 7] = [
        Path::Avx512Vnni,
        Path::AvxVnni,
        Path::Avx2,
        Path::NeonI8mm,
        Path::NeonDotprod,
        Path::Neon,
        Path::Scalar,
    ];

    /// The name `NIB_KERNELS` takes and `nib bench` reports.
    pub fn name(self) -> &'static str {
        match self {
            Path::Avx512Vnni => "avx512vnni",
            Path::AvxVnni => "avxvnni",
            Path::Avx2 => "avx2",
            Path::NeonI8mm => "neon-i8mm",
            Path::NeonDotprod => "neon-dotprod",
            Path::Neon => "neon",
            Path::Scalar => "scalar",
        }
    }

    pub fn from_name(name: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this CPU has the instructions the path needs.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512vnni = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            match self {
                Path::Avx512Vnni => avx512vnni,
                Path::AvxVnni => avx2 && (is_x86_feature_detected!("avxvnni") || avx512vnni),
                Path::Avx2 => avx2,
                Path::NeonI8mm | Path::NeonDotprod | Path::Neon => false,
                Path::Scalar => true,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let neon = std::arch::is_aarch64_feature_detected!("neon");
            let dotprod = neon && std::arch::is_aarch64_feature_detected!("dotprod");
            match self {
                Path::NeonI8mm => dotprod && std::arch::is_aarch64_feature_detected!("i8mm"),
                Path::NeonDotprod => dotprod,
                Path::Neon => neon,
                Path::Scalar => true,
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            self == Path::Scalar
        }
    }

    /// The paths this CPU has, fastest first.
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.supported()).collect()
    }

    /// The path `NIB_KERNELS` names, or the fastest this CPU has; an error names the paths it
    /// has when the variable asks for another.
    pub fn from_env() -> Result<Path, String> {
        Path::choose(std::env::var("NIB_KERNELS").ok().as_deref())
    }

    /// The path a `NIB_KERNELS` value asks for (`None` or empty: the fastest available).
    pub fn choose(wanted: Option<&str>) -> Result<Path, String> {
        let names = || {
            Path::available()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match wanted {
            Some(v) if !v.is_empty() => match Path::from_name(v) {
                Some(p) if p.supported() => Ok(p),
                Some(p) => Err(format!(
                    "NIB_KERNELS={v}: this CPU lacks the {} instructions; it has: {}",
                    p.name(),
                    names()
                )),
                None => Err(format!(
                    "NIB_KERNELS={v} names no kernel path; this CPU has: {}",
                    names()
                )),
            },
            _ => Ok(Path::available()[0]),
        }
    }
}

thread_local! {
    static OVERRIDE: std::cell::Cell<Option<Path>> = const { std::cell::Cell::new(None) };
}

/// The path in use: the one [`with_path`] set on this thread, else this process's
/// ([`Path::from_env`], decided once). Model loading reports a bad `NIB_KERNELS` as an error
/// (see [`selected`]); direct callers get a panic with it.
pub fn path() -> Path {
    OVERRIDE
        .get()
        .unwrap_or_else(|| selected().unwrap_or_else(|e| panic!("{e}")))
}

/// Runs `f` with the matmuls that this thread starts on `path` (which this CPU must have):
/// how tests compare whole-model results across paths in one process.
pub fn with_path<R>(path: Path, f: impl FnOnce() -> R) -> R {
    assert!(
        path.supported(),
        "this CPU lacks the {} kernels",
        path.name()
    );
    let before = OVERRIDE.replace(Some(path));
    let r = f();
    OVERRIDE.set(before);
    r
}

/// Whether a model on the CPU runs on nib's kernels: yes on every SIMD path, and on the
/// scalar one only when `NIB_KERNELS=scalar` asks for it (elsewhere candle's kernels, which
/// have their own SIMD, serve a CPU nib has no path for). The error says why `NIB_KERNELS`
/// cannot be followed.
pub fn serve_models() -> Result<bool, String> {
    let path = selected()?;
    Ok(path != Path::Scalar || std::env::var("NIB_KERNELS").is_ok_and(|v| v == "scalar"))
}

/// [`path`], or why `NIB_KERNELS` cannot be followed.
pub fn selected() -> Result<Path, String> {
    static PATH: std::sync::OnceLock<Result<Path, String>> = std::sync::OnceLock::new();
    PATH.get_or_init(Path::from_env).clone()
}

/// Weight rows per panel: the kernels read rows 8 at a time, so [`QWeight`] stores them that way.
pub const PANEL: usize = 8;

/// A weight matrix of `n` rows (output features) by `k` columns.
///
/// The GGUF blocks are kept, byte for byte, but rearranged at load, in place, into panels of
/// [`PANEL`] rows (the last padded with zero rows), so that decoding reads one stream and each
/// 32-bit lane of a register holds one row's 4 codes. Within a panel, stored block `b` of its 8
/// rows takes `8 × block_bytes` bytes, laid out as:
/// - Q4_0: the 8 f16 scales; then for each group `g` of 4 bytes (0..4), each row's bytes
///   `4g..4g + 4` of its 16 code bytes (low nibbles: codes `4g..`, high: codes `16 + 4g..`).
/// - Q5_0: the 8 scales; a plane of 32 bytes whose byte `4r + e` holds in bit `t` the fifth bit
///   of row `r`'s code `4t + e`; then the 4-bit codes as Q4_0's.
/// - Q8_0: the 8 scales; for each group `g` (0..8), each row's codes `4g..4g + 4`, plus 128
///   (stored unsigned, as the kernels read them).
/// - Q4_K (per super-block of 256): the 8 `d`, the 8 `dmin`, the 12 bytes of packed 6-bit
///   scales and minimums as three words of 4 bytes, word by word, row by row; then for each
///   pair `c` of sub-blocks (0..4) and group `g` (0..8), each row's code bytes `32c + 4g..+4`
///   (low nibbles: sub-block `2c`, high: `2c + 1`).
///
/// [`QWeight::gguf_block`] gives any block back as GGUF stores it; the scalar reference decodes
/// those.
pub struct QWeight {
    format: Format,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl QWeight {
    /// `None` unless `k` is a whole number of the format's blocks and `data` holds exactly
    /// `n` rows of them, in GGUF's layout.
    pub fn new(format: Format, n: usize, k: usize, mut data: Vec<u8>) -> Option<Self> {
        let ok = k.is_multiple_of(format.block_elems())
            && n.checked_mul(format.bytes_for(k)) == Some(data.len());
        if !ok {
            return None;
        }
        let panel_bytes = PANEL * format.bytes_for(k);
        data.resize(n.div_ceil(PANEL) * panel_bytes, 0);
        let mut rows = vec![0u8; panel_bytes];
        for panel in data.chunks_exact_mut(panel_bytes) {
            rows.copy_from_slice(panel);
            to_panel(format, k / format.block_elems(), &rows, panel);
        }
        Some(Self { format, n, k, data })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Stored bytes (with the last panel's padding rows).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Panels (`n / 8`, rounded up).
    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// Bytes of one panel.
    fn panel_bytes(&self) -> usize {
        PANEL * self.format.bytes_for(self.k)
    }

    /// Stored block `b` of row `j` as GGUF has it, written to `out` (one block's bytes).
    pub fn gguf_block(&self, j: usize, b: usize, out: &mut [u8]) {
        let (bb, blocks) = (
            self.format.block_bytes(),
            self.k / self.format.block_elems(),
        );
        assert!(j < self.n && b < blocks, "block {b} of row {j}");
        assert_eq!(out.len(), bb, "a block has {bb} bytes");
        let at = j / PANEL * self.panel_bytes() + b * PANEL * bb;
        from_panel(self.format, &self.data[at..at + PANEL * bb], j % PANEL, out);
    }

    /// Row `j` as GGUF stores it.
    pub fn gguf_row(&self, j: usize) -> Vec<u8> {
        let bb = self.format.block_bytes();
        let mut out = vec![0u8; self.format.bytes_for(self.k)];
        for (b, blk) in out.chunks_exact_mut(bb).enumerate() {
            self.gguf_block(j, b, blk);
        }
        out
    }

    /// Decodes row `j` into codes `u` (`k` bytes), scales `a` (one per [`Format::span`]
    /// values) and minimum terms `mn` (one per 32; left alone for formats without one), block
    /// by block as GGUF defines them: the reference every path is held to.
    pub fn expand_row(&self, j: usize, u: &mut [u8], a: &mut [f32], mn: &mut [f32]) {
        assert!(j < self.n, "row {j} of {}", self.n);
        let (bb, be, span) = (
            self.format.block_bytes(),
            self.format.block_elems(),
            self.format.span(),
        );
        assert!(
            u.len() >= self.k && a.len() >= self.k / span,
            "buffers too small"
        );
        assert!(
            !self.format.has_min() || mn.len() >= self.k / QK,
            "buffers too small"
        );
        let mut blk = [0u8; 210];
        let (units, mins) = (be / span, be / QK);
        for b in 0..self.k / be {
            self.gguf_block(j, b, &mut blk[..bb]);
            let mn = if self.format.has_min() {
                &mut mn[b * mins..(b + 1) * mins]
            } else {
                &mut []
            };
            expand_scalar(
                self.format,
                &blk[..bb],
                &mut u[b * be..(b + 1) * be],
                &mut a[b * units..(b + 1) * units],
                mn,
            );
        }
    }

    /// Stored block `sb` of panel `p`'s 8 rows, decoded straight from the panel into one
    /// [`Lanes`] per 32-block (`out`: 1, or 8 for Q4_K and Q6_K's super-blocks): the codes,
    /// scales and minimum terms [`QWeight::expand_row`] gives for those rows, laid out as the
    /// SIMD registers take them. Portable code over runs of 32 bytes, which compilers
    /// vectorise; the NEON paths decode with it.
    #[cfg_attr(not(any(target_arch = "aarch64", test)), allow(dead_code))]
    fn lanes(&self, p: usize, sb: usize, out: &mut [Lanes]) {
        let blocks = self.k / self.format.block_elems();
        assert!(p < self.panels() && sb < blocks, "block {sb} of panel {p}");
        assert_eq!(
            out.len(),
            self.format.block_elems() / QK,
            "32-blocks a stored block"
        );
        let bb = PANEL * self.format.block_bytes();
        let at = p * self.panel_bytes() + sb * bb;
        let blk = &self.data[at..at + bb];
        let f16_at = |i: usize| f16::from_le_bytes([blk[i], blk[i + 1]]).to_f32();
        // Q4_0 and Q5_0's codes, and Q6_K's low 4 bits: group `g`'s byte `4r + e` holds codes
        // `4g + e` (low nibble) and `16 + 4g + e` (high) of row `r`.
        let nibbles = |u: &mut [u8; 256], from: &[u8]| {
            for g in 0..4 {
                for i in 0..32 {
                    let x = from[32 * g + i];
                    u[32 * g + i] = x & 0x0f;
                    u[32 * (g + 4) + i] = x >> 4;
                }
            }
        };
        match self.format {
            Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => {
                let out = &mut out[0];
                for r in 0..PANEL {
                    out.a[r] = f16_at(2 * r);
                }
                match self.format {
                    Format::Q4_0 => nibbles(&mut out.u, &blk[16..144]),
                    Format::Q5_0 => {
                        nibbles(&mut out.u, &blk[48..176]);
                        for t in 0..8 {
                            for i in 0..32 {
                                out.u[32 * t + i] |= ((blk[16 + i] >> t) & 1) << 4;
                            }
                        }
                    }
                    _ => out.u.copy_from_slice(&blk[16..272]),
                }
            }
            Format::Q4K => {
                for r in 0..PANEL {
                    let mut q = [0u8; 12];
                    for w in 0..3 {
                        q[4 * w..4 * w + 4].copy_from_slice(&blk[32 + 32 * w + 4 * r..][..4]);
                    }
                    let (d, dmin) = (f16_at(2 * r), f16_at(16 + 2 * r));
                    for (beta, out) in out.iter_mut().enumerate() {
                        let (sc, m) = scale_min_k4(beta, &q);
                        out.a[r] = d * sc as f32;
                        out.mn[r] = -(dmin * m as f32);
                    }
                }
                for (beta, out) in out.iter_mut().enumerate() {
                    let codes = &blk[128 + 256 * (beta / 2)..][..256];
                    let shift = 4 * (beta % 2);
                    for (o, &x) in out.u.iter_mut().zip(codes) {
                        *o = (x >> shift) & 0x0f;
                    }
                }
            }
            Format::Q6K => {
                for r in 0..PANEL {
                    let d = f16_at(2 * r);
                    for (unit, &sc) in blk[Q6K_SCALES..Q6K_SCALES + 128]
                        .iter()
                        .skip(r)
                        .step_by(PANEL)
                        .enumerate()
                    {
                        out[unit / 2].a[8 * (unit % 2) + r] = d * sc as i8 as f32;
                    }
                }
                for (beta, out) in out.iter_mut().enumerate() {
                    let codes = &blk[q6k_codes_at(beta)..][..192];
                    nibbles(&mut out.u, &codes[..128]);
                    for t in 0..8 {
                        let plane = &codes[128 + 32 * (t / 4)..][..32];
                        for (u, &x) in out.u[32 * t..32 * t + 32].iter_mut().zip(plane) {
                            *u |= ((x >> (2 * (t % 4))) & 3) << 4;
                        }
                    }
                }
            }
        }
    }

    /// Row `j` as floats: `x = a·(u − c) + mn`, what ggml's dequantization gives.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.k, "a row has {} values", self.k);
        let (nb, span) = (self.k / QK, self.format.span());
        let mut u = vec![0u8; self.k];
        let (mut a, mut mn) = (vec![0f32; self.k / span], vec![0f32; nb]);
        self.expand_row(j, &mut u, &mut a, &mut mn);
        let c = self.format.offset();
        for (i, x) in out.iter_mut().enumerate() {
            let v = a[i / span] * (u[i] as i32 - c) as f32;
            *x = if self.format.has_min() {
                v + mn[i / QK]
            } else {
                v
            };
        }
    }
}

/// One 32-block of a panel's 8 rows, decoded ([`QWeight::lanes`]): `u[32t + 4r + e]` is row
/// `r`'s code `4t + e` (so 16 bytes hold 4 rows' codes of a group, one row a 32-bit lane);
/// `a[8·unit + r]` row `r`'s scale of span `unit` (1, or 2 for Q6_K); `mn[r]` its minimum term
/// (Q4_K).
#[cfg_attr(not(any(target_arch = "aarch64", test)), allow(dead_code))]
pub(crate) struct Lanes {
    pub(crate) u: [u8; 256],
    pub(crate) a: [f32; 16],
    pub(crate) mn: [f32; 8],
}

#[cfg_attr(not(any(target_arch = "aarch64", test)), allow(dead_code))]
impl Lanes {
    pub(crate) fn new() -> Self {
        Self {
            u: [0; 256],
            a: [0.0; 16],
            mn: [0.0; 8],
        }
    }
}

/// Where one row's bytes of a stored block go in a panel's block (`8 × block_bytes`): calls
/// `f(offset in the panel block, offset in the row's block, length)` for each run. Q5_0's fifth
/// bits and Q8_0's +128 are left to the callers.
fn panel_runs(format: Format, r: usize, mut f: impl FnMut(usize, usize, usize)) {
    f(2 * r, 0, 2);
    match format {
        Format::Q4_0 => (0..4).for_each(|g| f(16 + 32 * g + 4 * r, 2 + 4 * g, 4)),
        Format::Q5_0 => (0..4).for_each(|g| f(48 + 32 * g + 4 * r, 6 + 4 * g, 4)),
        Format::Q8_0 => (0..8).for_each(|g| f(16 + 32 * g + 4 * r, 2 + 4 * g, 4)),
        Format::Q4K => {
            f(16 + 2 * r, 2, 2);
            (0..3).for_each(|w| f(32 + 32 * w + 4 * r, 4 + 4 * w, 4));
            (0..32).for_each(|cg| f(128 + 32 * cg + 4 * r, 16 + 4 * cg, 4));
        }
        Format::Q6K => unreachable!("Q6_K panels are rearranged code by code"),
    }
}

/// Q6_K's 6-bit code `v` (0..256) of a GGUF block, as ggml packs them: the low 4 bits in
/// `ql`, the top 2 in `qh`.
fn q6k_code(blk: &[u8], v: usize) -> u8 {
    let (n, l, r) = (v / 128, v % 32, v % 128 / 32);
    let low = blk[64 * n + l + 32 * (r & 1)];
    let low = if r >= 2 { low >> 4 } else { low & 0x0f };
    low | (((blk[128 + 32 * n + l] >> (2 * r)) & 3) << 4)
}

/// Q6_K's panel layout (per super-block of 8 rows, 8 × 210 bytes): the 8 f16 `d`; the 16 i8
/// scales of each row as `[unit of 16][row]`; then for each 32-block, 192 bytes read in one
/// run: 4 × 32 bytes of code nibbles (byte `4r + e` of group `g`: row `r`'s code `4g + e` low,
/// `16 + 4g + e` high), then 2 × 32 bytes of top bits (byte `4r + e` of plane `p`: bits `2t',
/// 2t' + 1` are those of row `r`'s code `4(4p + t') + e`).
pub(crate) const Q6K_SCALES: usize = 16;

/// Where 32-block `beta`'s nibbles start in a Q6_K panel super-block; its top bits follow at
/// +128.
pub(crate) const fn q6k_codes_at(beta: usize) -> usize {
    144 + 192 * beta
}

/// Row `r`'s Q6_K block `src` into a panel super-block `pb` (`to_panel`'s work for Q6_K).
fn q6k_to_panel(src: &[u8], r: usize, pb: &mut [u8]) {
    pb[2 * r..2 * r + 2].copy_from_slice(&src[208..210]);
    for unit in 0..16 {
        pb[Q6K_SCALES + 8 * unit + r] = src[192 + unit];
    }
    for beta in 0..8 {
        for e in 0..4 {
            for g in 0..4 {
                let lo = q6k_code(src, 32 * beta + 4 * g + e);
                let hi = q6k_code(src, 32 * beta + 16 + 4 * g + e);
                pb[q6k_codes_at(beta) + 32 * g + 4 * r + e] = (lo & 0x0f) | (hi << 4);
            }
            for t in 0..8 {
                let top = q6k_code(src, 32 * beta + 4 * t + e) >> 4;
                pb[q6k_codes_at(beta) + 128 + 32 * (t / 4) + 4 * r + e] |= top << (2 * (t % 4));
            }
        }
    }
}

/// Row `r`'s Q6_K block from a panel super-block: the inverse of [`q6k_to_panel`].
fn q6k_from_panel(pb: &[u8], r: usize, out: &mut [u8]) {
    out[208..210].copy_from_slice(&pb[2 * r..2 * r + 2]);
    for unit in 0..16 {
        out[192 + unit] = pb[Q6K_SCALES + 8 * unit + r];
    }
    out[..192].fill(0);
    for v in 0..256 {
        let (beta, w) = (v / 32, v % 32);
        let (t, e) = (w / 4, w % 4);
        let nib = pb[q6k_codes_at(beta) + 32 * (t % 4) + 4 * r + e];
        let low = if t < 4 { nib & 0x0f } else { nib >> 4 };
        let top = (pb[q6k_codes_at(beta) + 128 + 32 * (t / 4) + 4 * r + e] >> (2 * (t % 4))) & 3;
        let (n, l, rr) = (v / 128, v % 32, v % 128 / 32);
        out[64 * n + l + 32 * (rr & 1)] |= if rr >= 2 { low << 4 } else { low };
        out[128 + 32 * n + l] |= top << (2 * rr);
    }
}

/// Rearranges 8 GGUF rows of `blocks` stored blocks each (`rows`) into one panel (`out`).
fn to_panel(format: Format, blocks: usize, rows: &[u8], out: &mut [u8]) {
    let bb = format.block_bytes();
    for b in 0..blocks {
        let pb = &mut out[b * PANEL * bb..(b + 1) * PANEL * bb];
        pb.fill(0);
        for r in 0..PANEL {
            let src = &rows[(r * blocks + b) * bb..(r * blocks + b + 1) * bb];
            if format == Format::Q6K {
                q6k_to_panel(src, r, pb);
                continue;
            }
            panel_runs(format, r, |p, s, len| {
                pb[p..p + len].copy_from_slice(&src[s..s + len])
            });
            match format {
                Format::Q5_0 => {
                    let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
                    for e in 0..4 {
                        for t in 0..8 {
                            pb[16 + 4 * r + e] |= (((qh >> (4 * t + e)) & 1) as u8) << t;
                        }
                    }
                }
                Format::Q8_0 => {
                    for g in 0..8 {
                        let at = 16 + 32 * g + 4 * r;
                        pb[at..at + 4].iter_mut().for_each(|c| *c ^= 0x80);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Row `r`'s stored block from a panel's block `pb` (`8 × block_bytes`): the inverse of
/// [`to_panel`].
fn from_panel(format: Format, pb: &[u8], r: usize, out: &mut [u8]) {
    if format == Format::Q6K {
        return q6k_from_panel(pb, r, out);
    }
    panel_runs(format, r, |p, s, len| {
        out[s..s + len].copy_from_slice(&pb[p..p + len])
    });
    match format {
        Format::Q5_0 => {
            let mut qh = 0u32;
            for e in 0..4 {
                for t in 0..8 {
                    qh |= (((pb[16 + 4 * r + e] >> t) & 1) as u32) << (4 * t + e);
                }
            }
            out[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        Format::Q8_0 => out[2..].iter_mut().for_each(|c| *c ^= 0x80),
        _ => {}
    }
}

/// Q4_K's 6-bit scale and minimum of sub-block `j` (0..8), as ggml packs them in 12 bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A Q4_K super-block's 8 scales and minimum terms: `a = d·sc`, `mn = −(dmin·m)` (each exact
/// in f32: an f16 times a 6-bit integer).
fn q4k_scales(blk: &[u8], a: &mut [f32], mn: &mut [f32]) {
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    let dmin = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &blk[4..16]);
        a[j] = d * sc as f32;
        mn[j] = -(dmin * m as f32);
    }
}

fn expand_scalar(format: Format, bytes: &[u8], u: &mut [u8], a: &mut [f32], mn: &mut [f32]) {
    let bb = format.block_bytes();
    if format == Format::Q6K {
        // a = d·sc: exact in f32 (an f16 times a signed 8-bit integer).
        for (s, blk) in bytes.chunks_exact(bb).enumerate() {
            let d = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
            for unit in 0..16 {
                a[s * 16 + unit] = d * blk[192 + unit] as i8 as f32;
            }
            for v in 0..256 {
                u[s * 256 + v] = q6k_code(blk, v);
            }
        }
        return;
    }
    if format == Format::Q4K {
        for (s, blk) in bytes.chunks_exact(bb).enumerate() {
            q4k_scales(blk, &mut a[s * 8..s * 8 + 8], &mut mn[s * 8..s * 8 + 8]);
            for j in 0..8 {
                let q = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
                let out = &mut u[(s * 8 + j) * QK..(s * 8 + j + 1) * QK];
                for (o, &q) in out.iter_mut().zip(q) {
                    *o = if j % 2 == 0 { q & 0x0f } else { q >> 4 };
                }
            }
        }
        return;
    }
    for (b, blk) in bytes.chunks_exact(bb).enumerate() {
        a[b] = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let out = &mut u[b * QK..(b + 1) * QK];
        match format {
            Format::Q4_0 => {
                for j in 0..16 {
                    out[j] = blk[2 + j] & 0x0f;
                    out[j + 16] = blk[2 + j] >> 4;
                }
            }
            Format::Q5_0 => {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let q = blk[6 + j];
                    out[j] = (q & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    out[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                }
            }
            Format::Q8_0 => {
                for j in 0..QK {
                    out[j] = blk[2 + j] ^ 0x80;
                }
            }
            Format::Q4K | Format::Q6K => unreachable!("handled above"),
        }
    }
}

/// Quantizes weights to GGUF Q8_0 blocks (an f16 scale `amax/127`, then 32 i8 codes, rounded
/// half away from zero), as ggml's reference quantizer does. `x.len()` must be a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(QK), "not whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / QK * Format::Q8_0.block_bytes());
    for blk in x.chunks_exact(QK) {
        let amax = blk.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|v| ((v * inv).round() as i8) as u8));
    }
    out
}

/// Activations quantized to 8 bits per 32-block: `m` rows of `k`.
pub struct QActs {
    m: usize,
    k: usize,
    q: Vec<i8>,
    /// Block scales, `m × k/32`.
    d: Vec<f32>,
    /// `Σq` per block, `m × k/32`: with a weight format's offset it corrects the unsigned codes.
    qsum: Vec<i32>,
    /// `Σq` per half block, `m × k/16` (Q6_K's scales span 16 values).
    qsum16: Vec<i32>,
}

impl QActs {
    pub fn m(&self) -> usize {
        self.m
    }

    /// What each scale's integer dot starts from for `format`'s codes read with `read_offset`
    /// taken off already: `−(c − read_offset)·Σq` per span of a scale (`m × k/span`).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    fn corrections(&self, format: Format, read_offset: i32) -> Vec<i32> {
        let sums = if format.span() == QK {
            &self.qsum
        } else {
            &self.qsum16
        };
        sums.iter()
            .map(|s| -(format.offset() - read_offset) * s)
            .collect()
    }

    pub fn k(&self) -> usize {
        self.k
    }
}

/// `x.round() as i32` (half away from zero, saturating, NaN → 0) from SSE2's truncation, so that
/// a loop over it vectorises in the baseline x86-64 build, which has no SSE4.1 `roundps`
/// (`round` would call libm for every element).
#[inline(always)]
pub(crate) fn round_i32(x: f32) -> i32 {
    let t = x as i32;
    // Exact below 2^23; above, `x` is an integer or `t` saturated, and the steps saturate too.
    let r = x - t as f32;
    t.saturating_add((r >= 0.5) as i32)
        .saturating_sub((r <= -0.5) as i32)
}

/// Quantizes `m` rows of `k` activations (round half away from zero, as ggml does; a value
/// that is not finite counts as 0). Blocks are independent: a prompt's go to the worker pool
/// in runs, each quantized on the kernel path in use ([`path`]: AVX2 on every x86 SIMD path),
/// which gives the scalar code's bits ([`quantize_blocks`]; test).
pub fn quantize_acts(x: &[f32], m: usize, k: usize) -> QActs {
    assert!(k.is_multiple_of(QK), "k = {k} is not whole blocks of 32");
    assert_eq!(Some(x.len()), m.checked_mul(k), "activations are not m × k");
    let blocks = m * k / QK;
    let mut acts = QActs {
        m,
        k,
        q: vec![0i8; m * k],
        d: vec![0f32; blocks],
        qsum: vec![0i32; blocks],
        qsum16: vec![0i32; 2 * blocks],
    };
    let path = path();
    // Runs of 64 blocks (2,048 values); fewer than 4 runs (a decoded token) stay on this thread.
    const RUN: usize = 64;
    if blocks < 4 * RUN {
        let a = &mut acts;
        quantize_blocks(path, x, &mut a.q, &mut a.d, &mut a.qsum, &mut a.qsum16);
        return acts;
    }
    let (q, d) = (SyncPtr(acts.q.as_mut_ptr()), SyncPtr(acts.d.as_mut_ptr()));
    let (s, s16) = (
        SyncPtr(acts.qsum.as_mut_ptr()),
        SyncPtr(acts.qsum16.as_mut_ptr()),
    );
    par_grabs(
        blocks.div_ceil(RUN),
        1,
        || (),
        |_, tasks| {
            let (q, d, s, s16) = (&q, &d, &s, &s16);
            for t in tasks {
                let (b0, b1) = (t * RUN, ((t + 1) * RUN).min(blocks));
                let n = b1 - b0;
                // SAFETY: run t covers blocks b0..b1 < blocks, whose codes (32 a block), scales,
                // sums and half sums (2 a block) lie inside the buffers allocated above for
                // `blocks` blocks; no other run touches them, and `acts` is not read meanwhile.
                unsafe {
                    quantize_blocks(
                        path,
                        &x[b0 * QK..b1 * QK],
                        std::slice::from_raw_parts_mut(q.0.add(b0 * QK), n * QK),
                        std::slice::from_raw_parts_mut(d.0.add(b0), n),
                        std::slice::from_raw_parts_mut(s.0.add(b0), n),
                        std::slice::from_raw_parts_mut(s16.0.add(2 * b0), 2 * n),
                    );
                }
            }
        },
    );
    acts
}

/// Quantizes consecutive 32-blocks `x` into codes `q`, scales `d`, sums `qsum` and half sums
/// `qsum16`, on `path` (which this CPU must have): AVX2 on the x86 SIMD paths, else the scalar
/// code. Both give the same bits.
fn quantize_blocks(
    path: Path,
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    qsum: &mut [i32],
    qsum16: &mut [i32],
) {
    let n = x.len() / QK;
    assert!(x.len() == n * QK && q.len() == n * QK && d.len() == n && qsum.len() == n);
    assert_eq!(qsum16.len(), 2 * n);
    assert!(
        path.supported(),
        "this CPU lacks the {} kernels",
        path.name()
    );
    #[cfg(target_arch = "x86_64")]
    let avx2 = matches!(path, Path::Avx512Vnni | Path::AvxVnni | Path::Avx2);
    for (i, (blk, qb)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: every x86 SIMD path has AVX2 and FMA (`Path::supported`, asserted above);
        // both blocks hold 32 values.
        let (scale, sums) = if avx2 {
            unsafe { avx2::quantize_block(blk, qb) }
        } else {
            quantize_block_scalar(blk, qb)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (scale, sums) = quantize_block_scalar(blk, qb);
        (d[i], qsum[i]) = (scale, sums[0] + sums[1]);
        qsum16[2 * i..2 * i + 2].copy_from_slice(&sums);
    }
}

/// One 32-block: its codes into `q`; its scale, and the sums of its codes' two halves.
fn quantize_block_scalar(blk: &[f32], q: &mut [i8]) -> (f32, [i32; 2]) {
    let amax = blk.iter().fold(0f32, |acc, v| acc.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut sums = [0i32; 2];
    for (j, (o, v)) in q.iter_mut().zip(blk).enumerate() {
        // Clamped: the kernels rely on |q| ≤ 127 (AVX2's pair sums), whatever `x` holds.
        let r = round_i32(v * inv).clamp(-127, 127);
        *o = r as i8;
        sums[j / 16] += r;
    }
    (scale, sums)
}

/// One decoded weight row (codes `u`, scales `a` per [`Format::span`], minimum terms `mn` where
/// `format` has them) against activation row `i` of `acts`, in the order every path follows: per scale's span an exact integer
/// `Σ u·q − c·Σq`, then `acc = fma(dot, a·d, acc)`; after each 32-block with a minimum,
/// `acc = fma(Σq, mn·d, acc)`; block after block.
pub fn dot_scalar(format: Format, row: &Decoded, acts: &QActs, i: usize) -> f32 {
    let (k, nb) = (acts.k, acts.k / QK);
    let (u, a, mn) = (row.u, row.a, row.mn);
    let q = &acts.q[i * k..(i + 1) * k];
    let d = &acts.d[i * nb..(i + 1) * nb];
    let qsum = &acts.qsum[i * nb..(i + 1) * nb];
    let qsum16 = &acts.qsum16[2 * i * nb..2 * (i + 1) * nb];
    let span = format.span();
    let mut acc = 0f32;
    for (s, &a) in a.iter().enumerate() {
        let b = s * span / QK;
        let sum = if span == QK { qsum[b] } else { qsum16[s] };
        let mut dot = -format.offset() * sum;
        for j in s * span..(s + 1) * span {
            dot += u[j] as i32 * q[j] as i32;
        }
        acc = (dot as f32).mul_add(a * d[b], acc);
        if format.has_min() {
            acc = (qsum[b] as f32).mul_add(mn[b] * d[b], acc);
        }
    }
    acc
}

/// A tile of `2 × lanes` decoded weight rows (whole panels) laid out for the prefill kernels,
/// kept in cache while every activation row passes by. Lane `r` of a register is weight row
/// `r`: per 32-block and group of 4 codes, two registers' worth (rows `0..lanes`, then the
/// rest), 4 codes a row. Filled by `avx2::fill_tile`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile {
    k: usize,
    lanes: usize,
    /// Rows of the weights in the tile (the rest of its lanes are zeros, never stored).
    rows: usize,
    /// The rows' format (Q4_0 until filled).
    format: Format,
    /// Codes, `[block][group of 4][half][lane][4]`.
    u: Vec<u8>,
    /// Scales, `[block][unit][half][lane]`, and minimum terms, `[block][half][lane]`.
    a: Vec<f32>,
    mn: Vec<f32>,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Tile {
    /// Scales per 32-block: 1, or 2 for Q6_K.
    fn units(&self) -> usize {
        QK / self.format.span()
    }

    fn new(k: usize, lanes: usize) -> Self {
        assert!(lanes.is_multiple_of(PANEL));
        let nb = k / QK;
        Self {
            k,
            lanes,
            rows: 0,
            format: Format::Q4_0,
            u: vec![0; 2 * lanes * k],
            a: vec![0.0; 4 * lanes * nb],
            mn: vec![0.0; 2 * lanes * nb],
        }
    }
}

/// Runs `f` over `0..n_items` on candle's pool, in grabs of `grab` items, so that the threads
/// finish within one grab of each other while each streams through memory in order: thread `t`
/// takes grabs from the front of the `t`-th contiguous share, then helps with the others'. The
/// grabs run in any order; each thread makes its scratch state once (`init`). Every kernel
/// here splits its work with it: matmuls, activation quantization, attention (and `nib
/// bench`'s bandwidth reader, to read as the kernels do).
///
/// candle's `execute_chunked` hands out an eighth of a thread's share at a time: for the 1.5B
/// while decoding half a megabyte of weights (its feed-forward matrices) to 12 MB (its output
/// matrix), and the first thread done waited for the other at every matmul (2.5% of the main
/// thread's time, more of the worker's; `perf record`, 2026-12-06). Small grabs from one shared
/// cursor instead interleaved the threads' reads and decoded 15% slower.
pub(crate) fn par_grabs<S>(
    n_items: usize,
    grab: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, std::ops::Range<usize>) + Sync,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let grab = grab.max(1);
    if n_items <= grab {
        if n_items > 0 {
            f(&mut init(), 0..n_items);
        }
        return;
    }
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let share = n_items.div_ceil(threads);
    // Next item of each share.
    let cursors: Vec<AtomicUsize> = (0..threads)
        .map(|t| AtomicUsize::new((t * share).min(n_items)))
        .collect();
    // One item per thread (`execute_chunked` runs them all on this thread when called from
    // inside the pool, instead of deadlocking).
    pool.execute_chunked(threads, |mine| {
        let mut state = None;
        for t in mine {
            for s in (t..threads).chain(0..t) {
                let end = ((s + 1) * share).min(n_items);
                loop {
                    let start = cursors[s].fetch_add(grab, Ordering::Relaxed);
                    if start >= end {
                        break;
                    }
                    f(
                        state.get_or_insert_with(&init),
                        start..end.min(start + grab),
                    );
                }
            }
        }
    });
}

/// `gate[i] = silu(gate[i]) · up[i]`, the feed-forward block's gating, in candle's formula
/// (`x / (1 + exp(−x))`, then the product), so the same bits as its `silu` and `mul`; in one
/// pass on the pool instead of two with a buffer between.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up differ in length");
    const RUN: usize = 16 << 10;
    let out = SyncPtr(gate.as_mut_ptr());
    let len = gate.len();
    par_grabs(
        len.div_ceil(RUN),
        1,
        || (),
        |_, runs| {
            let span = runs.start * RUN..(runs.end * RUN).min(len);
            // SAFETY: `span` lies inside `gate` (its end clamped to the length), and the runs
            // of different grabs are disjoint, so no two threads touch the same element;
            // `gate` is borrowed mutably for the whole call.
            let out = &out;
            let g = unsafe { std::slice::from_raw_parts_mut(out.0.add(span.start), span.len()) };
            for (g, u) in g.iter_mut().zip(&up[span]) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        },
    );
}

pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
// SAFETY: tasks write disjoint parts of the buffer through it (see the callers).
unsafe impl<T> Sync for SyncPtr<T> {}

/// `out (m × n) = x (m × k) · wᵀ`, rows of `x` and `out` contiguous.
pub fn matmul(x: &[f32], m: usize, w: &QWeight, out: &mut [f32]) {
    assert_eq!(
        Some(x.len()),
        m.checked_mul(w.k),
        "activations are not m × k"
    );
    matmul_quantized(&quantize_acts(x, m, w.k), w, out);
}

/// [`matmul`] on activations quantized already: layers that read the same input (q, k, v;
/// gate, up) quantize it once.
pub fn matmul_quantized(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    matmul_on(path(), acts, w, out)
}

/// [`matmul_quantized`] on the given path (which this CPU must have).
pub fn matmul_on(path: Path, acts: &QActs, w: &QWeight, out: &mut [f32]) {
    assert!(
        path.supported(),
        "this CPU lacks the {} kernels",
        path.name()
    );
    let (m, x_k) = (acts.m, acts.k);
    assert_eq!(
        x_k, w.k,
        "activations have {x_k} columns, the weights {}",
        w.k
    );
    assert_eq!(Some(out.len()), m.checked_mul(w.n), "output is not m × n");
    if m == 0 || w.n == 0 {
        return;
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni if m >= 4 => avx512::matmul(acts, w, out),
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Vnni | Path::AvxVnni | Path::Avx2 => avx2::matmul(path, acts, w, out),
        #[cfg(target_arch = "aarch64")]
        Path::NeonI8mm | Path::NeonDotprod | Path::Neon => neon::matmul(path, acts, w, out),
        _ => matmul_scalar(acts, w, out),
    }
}

/// The reference: each row decoded, then [`dot_scalar`] with each activation row.
fn matmul_scalar(acts: &QActs, w: &QWeight, out: &mut [f32]) {
    row_by_row(
        acts,
        w,
        out,
        |_| {},
        |row, i| dot_scalar(w.format, row, acts, i),
    );
}

/// One decoded weight row: codes, scales, minimum terms (see [`QWeight::expand_row`]).
pub struct Decoded<'a> {
    pub u: &'a [u8],
    pub a: &'a [f32],
    pub mn: &'a [f32],
}

/// `out[i·n + j] = dot(row j, i)`: each weight row decoded once by the scalar code (then
/// `prep`ared), on candle's pool, and dotted with every activation row. The caller checked the
/// shapes (`out` is m × n).
fn row_by_row(
    acts: &QActs,
    w: &QWeight,
    out: &mut [f32],
    prep: impl Fn(&mut [u8]) + Sync,
    dot: impl Fn(&Decoded, usize) -> f32 + Sync,
) {
    let (m, n, k, nb) = (acts.m, w.n, w.k, w.k / QK);
    assert_eq!(out.len(), m * n);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let rows_per_task = 16;
    let scratch = || {
        (
            vec![0u8; k],
            vec![0f32; k / w.format.span()],
            vec![0f32; nb],
        )
    };
    par_grabs(
        n.div_ceil(rows_per_task),
        1,
        scratch,
        |(u, a, mn), tasks| {
            let out_ptr = &out_ptr;
            for t in tasks {
                for j in t * rows_per_task..((t + 1) * rows_per_task).min(n) {
                    w.expand_row(j, u, a, mn);
                    prep(u);
                    let row = Decoded { u, a, mn };
                    for i in 0..m {
                        let v = dot(&row, i);
                        // SAFETY: i < m and j < n, and `out` is m × n (asserted); column j is this
                        // task's alone.
                        unsafe { *out_ptr.0.add(i * n + j) = v };
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests;
