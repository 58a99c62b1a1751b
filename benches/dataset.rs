//! `tiw dataset convert` benchmark (plain `fn main()` harness).
//!
//! ```text
//! cargo bench --bench dataset -- [--out DIR] [--n N] [--tiw PATH] [--python PATH]
//! ```
//!
//! 1. writes N (default 50,000) deterministic 32×32 RGB PNGs (`NNNNNN.png`, PIL's
//!    `compress_level=0` encoding) and a `dataset.json` with 10 classes into `DIR/dataset-src`;
//! 2. reads them once (page cache warm), then times, in the same run, the release binary
//!    `tiw-full dataset convert --source DIR/dataset-src --dest DIR/tiw.zip` (whole process)
//!    and `benches/dataset_baseline.py` (EDM dataset_tool.py's folder path with PIL, numpy
//!    and zipfile; `--python`, default `$TIW_TORCH_PY` then `$TIW_PY`, needs PIL);
//! 3. checks that both archives hold the same members with the same bytes, prints images/s
//!    and writes `DIR/dataset.md` and `DIR/dataset.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;

struct Args {
    out: PathBuf,
    n: usize,
    tiw: Option<PathBuf>,
    python: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench-out"),
        n: 50_000,
        tiw: None,
        python: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(it.next().expect("--out needs a directory")),
            "--n" => {
                a.n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--n needs a count")
            }
            "--tiw" => a.tiw = Some(PathBuf::from(it.next().expect("--tiw needs a path"))),
            "--python" => a.python = Some(it.next().expect("--python needs a path")),
            "--bench" => {}
            "-h" | "--help" => {
                eprintln!(
                    "usage: cargo bench --bench dataset -- [--out DIR] [--n N] [--tiw PATH] [--python PATH]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// xorshift64* stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Image `i`: a smooth colour gradient plus noise (photo-like filter choices).
fn image(i: usize) -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    let (a, b, c) = (
        (r.next() % 256) as i32,
        (r.next() % 8) as i32,
        (r.next() % 8) as i32,
    );
    let mut px = Vec::with_capacity(32 * 32 * 3);
    for y in 0..32i32 {
        for x in 0..32i32 {
            for ch in 0..3i32 {
                let v = a + b * x + c * y + ch * 40 + (r.next() % 16) as i32;
                px.push(v.rem_euclid(256) as u8);
            }
        }
    }
    px
}

fn make_source(dir: &Path, n: usize) {
    let done = dir.join(format!(".complete-{n}"));
    if done.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let png = tiw::data::writer::encode_png(&image(i), 32, 32, 3).unwrap();
        let name = format!("{i:06}.png");
        std::fs::write(dir.join(&name), png).unwrap();
        labels.push(format!("[\"{name}\", {}]", i % 10));
    }
    std::fs::write(
        dir.join("dataset.json"),
        format!("{{\"labels\": [{}]}}", labels.join(", ")),
    )
    .unwrap();
    std::fs::write(done, b"").unwrap();
}

fn warm(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        total += std::fs::read(e.unwrap().path()).unwrap().len() as u64;
    }
    total
}

fn zip_members(p: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

fn main() {
    let a = parse_args();
    std::fs::create_dir_all(&a.out).unwrap();
    let exe = std::env::current_exe().unwrap();
    let tiw = a
        .tiw
        .clone()
        .unwrap_or_else(|| exe.parent().unwrap().parent().unwrap().join("tiw-full"));
    assert!(
        tiw.exists(),
        "{} not found (cargo build --release --bins)",
        tiw.display()
    );
    let src = a.out.join("dataset-src");
    let t = Instant::now();
    make_source(&src, a.n);
    eprintln!(
        "source: {} PNGs in {} ({:.1} s)",
        a.n,
        src.display(),
        t.elapsed().as_secs_f64()
    );
    let bytes = warm(&src);

    let tiw_zip = a.out.join("tiw.zip");
    let t = Instant::now();
    let o = Command::new(&tiw)
        .args(["dataset", "convert", "--source"])
        .arg(&src)
        .arg("--dest")
        .arg(&tiw_zip)
        .output()
        .unwrap();
    let tiw_s = t.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "tiw failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let python = a
        .python
        .clone()
        .or_else(|| std::env::var("TIW_TORCH_PY").ok())
        .or_else(|| std::env::var("TIW_PY").ok())
        .unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/dataset_baseline.py");
    let pil_zip = a.out.join("pil.zip");
    let t = Instant::now();
    let o = Command::new(&python)
        .arg(&script)
        .arg(&src)
        .arg(&pil_zip)
        .output()
        .unwrap();
    let pil_s = t.elapsed().as_secs_f64();
    let pil = if o.status.success() {
        let same = zip_members(&tiw_zip) == zip_members(&pil_zip);
        assert!(same, "tiw.zip and the PIL baseline's zip differ");
        Some(pil_s)
    } else {
        eprintln!(
            "PIL baseline skipped: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        );
        None
    };
    let n = a.n as f64;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut md = format!(
        "# tiw dataset convert: {} 32×32 RGB PNGs ({:.1} MB), {cores} cores\n\n| tool | wall s | images/s |\n|---|---|---|\n| tiw dataset convert (release, {cores} threads) | {tiw_s:.2} | {:.0} |\n",
        a.n,
        bytes as f64 / 1e6,
        n / tiw_s
    );
    if let Some(p) = pil {
        md += &format!("| dataset_tool.py logic (PIL, 1 thread) | {p:.2} | {:.0} |\n\nspeed-up ×{:.1}; both archives hold identical members (bytes).\n", n / p, p / tiw_s);
    }
    print!("{md}");
    std::fs::write(a.out.join("dataset.md"), &md).unwrap();
    let j = json!({"images": a.n, "cores": cores, "tiw_s": tiw_s, "tiw_images_per_s": n / tiw_s,
        "pil_s": pil, "pil_images_per_s": pil.map(|p| n / p)});
    std::fs::write(
        a.out.join("dataset.json"),
        serde_json::to_string_pretty(&j).unwrap(),
    )
    .unwrap();
}
