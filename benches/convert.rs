//! Checkpoint conversion benchmark (plain `fn main()` harness).
//!
//! ```text
//! cargo bench --bench convert -- [--out DIR] [--quick] [--runs N] [--tiw PATH]
//! ```
//!
//! For each full-size state_dict (the 55.7M-parameter CIFAR-10 DDPM++ of
//! `tests/fixtures/keys/cifar10_ddpmpp_edm_uncond.json`, ~223 MB, and the 47.8M-parameter ADM
//! classifier of `adm_classifier_32.json`, ~191 MB; `--quick`: the classifier only) it
//!
//! 1. builds the tensors with deterministic pseudo-random f32 values (xorshift64*) and writes
//!    them as a torch.save zip with `tiw_converters::pt_write::write` into DIR;
//! 2. reads the file once (page cache warm), then times, best of N (default 5), interleaved
//!    round by round: `cp FILE DIR/copy.bin` (external process, the copy removed between
//!    runs), the release binary `tiw convert FILE DIR/x.safetensors --quiet` and
//!    `tiw inspect FILE --json > /dev/null`; every child is reaped with `wait4`, which gives
//!    its peak RSS (`ru_maxrss`, the same number as `/usr/bin/time -f %M`), CPU times and
//!    page faults; plus the in-process library call `convert::convert_file`;
//! 3. checks the converted tensors against the generated ones, prints a table and writes it
//!    to `DIR/convert.md` and `DIR/convert.json`.
//!
//! Targets (from the issue): convert ≤ 1.5× cp, convert peak RSS ≤ 1.2× the input (+ a few
//! MB; 8 MB allowed here), inspect ≤ 50 ms.
//!
//! Units: MB = 10^6 bytes, GB/s = 10^9 bytes per second.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use tiw_converters::{convert, DType, Selection, TensorStore};

/// Target: convert time ≤ this × cp time.
const TARGET_CONVERT_OVER_CP: f64 = 1.5;
/// Target: convert peak RSS ≤ this × input size + [`TARGET_RSS_SLACK_MB`].
const TARGET_RSS_OVER_INPUT: f64 = 1.2;
/// "A few MB" of slack on the RSS target.
const TARGET_RSS_SLACK_MB: f64 = 8.0;
/// Target: `tiw inspect` wall time.
const TARGET_INSPECT_MS: f64 = 50.0;

const MB: f64 = 1e6;

struct Args {
    out: PathBuf,
    quick: bool,
    runs: usize,
    tiw: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench-out"),
        quick: false,
        runs: 5,
        tiw: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(it.next().expect("--out needs a directory")),
            "--quick" => a.quick = true,
            "--runs" => {
                a.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs needs a positive integer")
            }
            "--tiw" => a.tiw = Some(PathBuf::from(it.next().expect("--tiw needs a path"))),
            // `cargo bench` passes `--bench` to harness=false targets.
            "--bench" => {}
            "-h" | "--help" => {
                eprintln!("usage: cargo bench --bench convert -- [--out DIR] [--quick] [--runs N] [--tiw PATH]");
                std::process::exit(0);
            }
            other => eprintln!("convert bench: ignoring unknown argument {other:?}"),
        }
    }
    a
}

/// The release `tiw` binary: `--tiw`, else `$CARGO_TARGET_DIR` (or `target`) + `/release/tiw`,
/// else the one cargo built for this bench (`CARGO_BIN_EXE_tiw`, same place under `cargo bench`).
fn tiw_binary(args: &Args) -> PathBuf {
    if let Some(p) = &args.tiw {
        return p.clone();
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let p = dir.join("release").join("tiw");
    if p.is_file() {
        return p;
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_tiw") {
        return PathBuf::from(p);
    }
    panic!(
        "{} not found: build it first (`cargo build --release --bin tiw`) or pass --tiw PATH",
        p.display()
    );
}

// ---------------------------------------------------------------------------------------
// Synthetic checkpoints
// ---------------------------------------------------------------------------------------

struct Model {
    /// Short name, also the file stem.
    name: &'static str,
    /// Key listing under tests/fixtures/keys.
    keys: &'static str,
    seed: u64,
}

const MODELS: [Model; 2] = [
    Model {
        name: "cifar10_ddpmpp",
        keys: "cifar10_ddpmpp_edm_uncond.json",
        seed: 0x9E37_79B9_7F4A_7C15,
    },
    Model {
        name: "adm_classifier_32",
        keys: "adm_classifier_32.json",
        seed: 0xD1B5_4A32_D192_ED03,
    },
];

/// `(name, shape)` of every entry of a key listing, in state_dict order.
fn load_keys(path: &Path) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries = doc["entries"].as_array().unwrap_or_else(|| panic!("{}: no entries", path.display()));
    entries
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("entry name").to_string();
            let dtype = e["dtype"].as_str().unwrap_or("float32");
            assert_eq!(dtype, "float32", "{name}: only float32 listings are supported");
            let shape = e["shape"]
                .as_array()
                .expect("entry shape")
                .iter()
                .map(|d| d.as_u64().expect("dimension") as usize)
                .collect();
            (name, shape)
        })
        .collect()
}

/// xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A uniform f32 in [-0.5, 0.5) from 23 random bits, as little-endian bytes.
fn f32_bits(r: u32) -> [u8; 4] {
    (f32::from_bits(0x3f80_0000 | (r >> 9)) - 1.5).to_le_bytes()
}

/// Owned f32 tensors with deterministic pseudo-random values.
fn synth_store(keys: &[(String, Vec<usize>)], seed: u64) -> TensorStore {
    let mut rng = Rng(seed | 1);
    let tensors = keys
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut bytes = vec![0u8; n * 4];
            let mut pairs = bytes.chunks_exact_mut(8);
            for c in &mut pairs {
                let r = rng.next();
                c[..4].copy_from_slice(&f32_bits(r as u32));
                c[4..].copy_from_slice(&f32_bits((r >> 32) as u32));
            }
            let tail = pairs.into_remainder();
            if !tail.is_empty() {
                tail.copy_from_slice(&f32_bits(rng.next() as u32));
            }
            (name.clone(), DType::F32, shape.clone(), bytes)
        })
        .collect();
    TensorStore::from_owned(tensors).expect("valid synthetic tensors")
}

// ---------------------------------------------------------------------------------------
// Child processes, reaped with wait4 for their rusage
// ---------------------------------------------------------------------------------------

/// One run of a command.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    /// Peak resident set size in bytes (`None` where wait4 is unavailable).
    maxrss: Option<u64>,
    minflt: u64,
    majflt: u64,
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sys {
    use std::os::raw::{c_int, c_long};

    #[repr(C)]
    #[derive(Default)]
    pub struct Timeval {
        pub sec: c_long,
        pub usec: c_long,
    }

    /// `struct rusage` (Linux, LP64).
    #[repr(C)]
    #[derive(Default)]
    pub struct Rusage {
        pub utime: Timeval,
        pub stime: Timeval,
        pub maxrss: c_long,
        pub ixrss: c_long,
        pub idrss: c_long,
        pub isrss: c_long,
        pub minflt: c_long,
        pub majflt: c_long,
        pub nswap: c_long,
        pub inblock: c_long,
        pub oublock: c_long,
        pub msgsnd: c_long,
        pub msgrcv: c_long,
        pub nsignals: c_long,
        pub nvcsw: c_long,
        pub nivcsw: c_long,
    }

    extern "C" {
        pub fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
    }

    impl Timeval {
        pub fn secs(&self) -> f64 {
            self.sec as f64 + self.usec as f64 * 1e-6
        }
    }
}

/// Spawns `cmd` (stdout and stderr to files/null as set by the caller), waits for it, and
/// returns its wall time and resource usage. Panics if it fails.
fn run_child(mut cmd: Command, what: &str, stderr_log: &Path) -> Run {
    cmd.stderr(File::create(stderr_log).expect("stderr log"));
    let t0 = Instant::now();
    #[allow(unused_mut)]
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    let (ok, mut run) = {
        let mut status: std::os::raw::c_int = 0;
        let mut ru = sys::Rusage::default();
        loop {
            // SAFETY: plain syscall on our own child; `status` and `ru` are valid for writes.
            let r = unsafe { sys::wait4(child.id() as i32, &mut status, 0, &mut ru) };
            if r >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                panic!("{what}: wait4: {e}");
            }
        }
        let wall_s = t0.elapsed().as_secs_f64();
        // The child is reaped; `child` must not be waited on again (dropping it does not wait).
        let ok = status & 0x7f == 0 && (status >> 8) & 0xff == 0;
        (
            ok,
            Run {
                wall_s,
                user_s: ru.utime.secs(),
                sys_s: ru.stime.secs(),
                maxrss: Some(ru.maxrss as u64 * 1024),
                minflt: ru.minflt as u64,
                majflt: ru.majflt as u64,
            },
        )
    };
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    let (ok, mut run) = {
        let st = child.wait().unwrap_or_else(|e| panic!("{what}: wait: {e}"));
        (
            st.success(),
            Run {
                wall_s: t0.elapsed().as_secs_f64(),
                ..Default::default()
            },
        )
    };
    if !ok {
        let log = std::fs::read_to_string(stderr_log).unwrap_or_default();
        panic!("{what} failed:\n{log}");
    }
    run.wall_s = run.wall_s.max(1e-9);
    run
}

/// The fastest run, and the largest peak RSS over all runs.
fn best(runs: &[Run]) -> (Run, Option<u64>) {
    let b = *runs
        .iter()
        .min_by(|a, b| a.wall_s.total_cmp(&b.wall_s))
        .expect("at least one run");
    let rss = runs.iter().filter_map(|r| r.maxrss).max();
    (b, rss)
}

/// Reads `path` to the end through a reusable buffer (warms the page cache); returns seconds.
fn read_through(path: &Path) -> f64 {
    let t0 = Instant::now();
    let mut f = File::open(path).expect("open");
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        std::hint::black_box(&buf[..n]);
    }
    t0.elapsed().as_secs_f64()
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// One file
// ---------------------------------------------------------------------------------------

struct Row {
    name: &'static str,
    file: PathBuf,
    size: u64,
    tensors: usize,
    params: usize,
    pt_write_s: f64,
    read: f64,
    cp: Run,
    cp_rss: Option<u64>,
    convert: Run,
    convert_rss: Option<u64>,
    lib_convert_s: f64,
    inspect: Run,
    inspect_rss: Option<u64>,
    output_bytes: u64,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.convert.wall_s / self.cp.wall_s
    }
    fn convert_gbps(&self) -> f64 {
        self.size as f64 / self.convert.wall_s / 1e9
    }
    fn rss_ratio(&self) -> Option<f64> {
        self.convert_rss.map(|r| r as f64 / self.size as f64)
    }
    fn inspect_ms(&self) -> f64 {
        self.inspect.wall_s * 1e3
    }
    fn ratio_ok(&self) -> bool {
        self.ratio() <= TARGET_CONVERT_OVER_CP
    }
    fn rss_ok(&self) -> Option<bool> {
        self.convert_rss
            .map(|r| r as f64 <= TARGET_RSS_OVER_INPUT * self.size as f64 + TARGET_RSS_SLACK_MB * MB)
    }
    fn inspect_ok(&self) -> bool {
        self.inspect_ms() <= TARGET_INSPECT_MS
    }
}

fn bench_model(m: &Model, args: &Args, tiw: &Path, keys_dir: &Path) -> Row {
    let out = &args.out;
    let keys = load_keys(&keys_dir.join(m.keys));
    eprintln!("[{}] generating {} tensors", m.name, keys.len());
    let store = synth_store(&keys, m.seed);
    let file = out.join(format!("{}.pt", m.name));
    let t0 = Instant::now();
    tiw_converters::pt_write::write(&store, &file, &|_| {}).expect("write .pt");
    let pt_write_s = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&file).expect("stat").len();
    eprintln!(
        "[{}] wrote {} ({:.1} MB, {} tensors, {} elements) in {:.2} s",
        m.name,
        file.display(),
        size as f64 / MB,
        store.len(),
        store.total_numel(),
        pt_write_s
    );

    // Warm the page cache, then measure plain reads of it.
    read_through(&file);
    let read = (0..args.runs).map(|_| read_through(&file)).fold(f64::INFINITY, f64::min);

    let copy = out.join("copy.bin");
    let st = out.join("x.safetensors");
    let lib_st = out.join("lib.safetensors");
    let log = out.join("child-stderr.log");
    let (mut cps, mut convs, mut insps, mut libs) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.runs {
        remove(&copy);
        let mut c = Command::new("cp");
        c.arg(&file).arg(&copy).stdout(Stdio::null());
        cps.push(run_child(c, "cp", &log));
        remove(&copy);

        remove(&st);
        let mut c = Command::new(tiw);
        c.arg("convert").arg(&file).arg(&st).arg("--quiet").stdout(Stdio::null());
        convs.push(run_child(c, "tiw convert", &log));
        if round + 1 < args.runs {
            remove(&st);
        }

        let mut c = Command::new(tiw);
        c.arg("inspect").arg(&file).arg("--json").stdout(Stdio::null());
        insps.push(run_child(c, "tiw inspect", &log));

        remove(&lib_st);
        let t0 = Instant::now();
        convert::convert_file(&file, &lib_st, &Selection::default(), &|_, _| {}).expect("convert_file");
        libs.push(t0.elapsed().as_secs_f64());
        eprintln!(
            "[{}] round {}: cp {:.3} s, convert {:.3} s, inspect {:.1} ms, lib convert {:.3} s",
            m.name,
            round + 1,
            cps[round].wall_s,
            convs[round].wall_s,
            insps[round].wall_s * 1e3,
            libs[round]
        );
    }
    let (cp, cp_rss) = best(&cps);
    let (conv, convert_rss) = best(&convs);
    let (inspect, inspect_rss) = best(&insps);
    let lib_convert_s = libs.iter().copied().fold(f64::INFINITY, f64::min);

    // Check the output: every tensor equal to the generated one, both writers identical.
    let output_bytes = std::fs::metadata(&st).expect("stat output").len();
    let ck = tiw_converters::open(&st).expect("open output");
    let ex = ck.extract(&Selection::default()).expect("extract output");
    assert_eq!(ex.store.len(), store.len(), "tensor count");
    for (want, got) in store.entries().iter().zip(ex.store.entries()) {
        assert_eq!(want.name, got.name, "state_dict order");
        assert_eq!(want.shape, got.shape, "{}: shape", want.name);
        assert!(store.bytes(want) == ex.store.bytes(got), "{}: data differs", want.name);
    }
    drop(ck);
    let same = std::fs::read(&st).expect("read") == std::fs::read(&lib_st).expect("read");
    assert!(same, "binary and library outputs differ");
    remove(&st);
    remove(&lib_st);
    remove(&log);

    Row {
        name: m.name,
        file,
        size,
        tensors: store.len(),
        params: store.total_numel(),
        pt_write_s,
        read,
        cp,
        cp_rss,
        convert: conv,
        convert_rss,
        lib_convert_s,
        inspect,
        inspect_rss,
        output_bytes,
    }
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

fn mb(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}", b as f64 / MB)).unwrap_or_else(|| "n/a".into())
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn markdown(rows: &[Row], runs: usize, cpus: usize, cpu: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Machine: {cpus} CPUs ({cpu}). Best of {runs} runs, input warm in the page cache; \
         peak RSS is the largest `ru_maxrss` over the runs. MB = 10^6 bytes.\n\n"
    ));
    s.push_str(
        "| file | size MB | cp s | convert s | convert/cp | convert GB/s | peak RSS MB | RSS/input | inspect ms | lib convert s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.3} | {:.3} | {:.2} ({}) | {:.2} | {} | {} | {:.1} ({}) | {:.3} |\n",
            r.file.file_name().unwrap().to_string_lossy(),
            r.size as f64 / MB,
            r.cp.wall_s,
            r.convert.wall_s,
            r.ratio(),
            mark(r.ratio_ok()),
            r.convert_gbps(),
            mb(r.convert_rss),
            match (r.rss_ratio(), r.rss_ok()) {
                (Some(x), Some(ok)) => format!("{x:.2} ({})", mark(ok)),
                _ => "n/a".into(),
            },
            r.inspect_ms(),
            mark(r.inspect_ok()),
            r.lib_convert_s,
        ));
    }
    s.push_str(&format!(
        "\nTargets: convert/cp ≤ {TARGET_CONVERT_OVER_CP}, convert peak RSS ≤ {TARGET_RSS_OVER_INPUT}× input \
         + {TARGET_RSS_SLACK_MB} MB, inspect ≤ {TARGET_INSPECT_MS} ms.\n\n"
    ));
    s.push_str(
        "| file | tensors | params | read GB/s (page cache) | cp GB/s | convert user+sys s | convert minor faults | \
         cp RSS MB | inspect RSS MB | output MB | pt_write s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.3}+{:.3} | {} | {} | {} | {:.1} | {:.2} |\n",
            r.file.file_name().unwrap().to_string_lossy(),
            r.tensors,
            r.params,
            r.size as f64 / r.read / 1e9,
            r.size as f64 / r.cp.wall_s / 1e9,
            r.convert.user_s,
            r.convert.sys_s,
            r.convert.minflt,
            mb(r.cp_rss),
            mb(r.inspect_rss),
            r.output_bytes as f64 / MB,
            r.pt_write_s,
        ));
    }
    s
}

fn run_json(r: &Run, rss: Option<u64>) -> Value {
    json!({
        "wall_s": r.wall_s,
        "user_s": r.user_s,
        "sys_s": r.sys_s,
        "minor_faults": r.minflt,
        "major_faults": r.majflt,
        "peak_rss_bytes": rss,
    })
}

fn to_json(rows: &[Row], args: &Args, tiw: &Path, cpus: usize, cpu: &str) -> Value {
    json!({
        "bench": "convert",
        "runs": args.runs,
        "quick": args.quick,
        "tiw": tiw.display().to_string(),
        "machine": {"cpus": cpus, "cpu_model": cpu},
        "targets": {
            "convert_over_cp": TARGET_CONVERT_OVER_CP,
            "rss_over_input": TARGET_RSS_OVER_INPUT,
            "rss_slack_mb": TARGET_RSS_SLACK_MB,
            "inspect_ms": TARGET_INSPECT_MS,
        },
        "files": rows.iter().map(|r| json!({
            "name": r.name,
            "file": r.file.display().to_string(),
            "size_bytes": r.size,
            "tensors": r.tensors,
            "params": r.params,
            "pt_write_s": r.pt_write_s,
            "read_s": r.read,
            "cp": run_json(&r.cp, r.cp_rss),
            "convert": run_json(&r.convert, r.convert_rss),
            "inspect": run_json(&r.inspect, r.inspect_rss),
            "lib_convert_s": r.lib_convert_s,
            "output_bytes": r.output_bytes,
            "convert_over_cp": r.ratio(),
            "convert_gbps": r.convert_gbps(),
            "rss_over_input": r.rss_ratio(),
            "inspect_ms": r.inspect_ms(),
            "ok": {
                "convert_over_cp": r.ratio_ok(),
                "rss_over_input": r.rss_ok(),
                "inspect_ms": r.inspect_ok(),
            },
        })).collect::<Vec<_>>(),
    })
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.out).expect("create --out directory");
    let tiw = tiw_binary(&args);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let keys_dir = root.join("tests/fixtures/keys");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = cpu_model();
    eprintln!("tiw binary: {}", tiw.display());
    eprintln!("machine: {cpus} CPUs, {cpu}");
    let models: Vec<&Model> = if args.quick {
        MODELS.iter().filter(|m| m.name == "adm_classifier_32").collect()
    } else {
        MODELS.iter().collect()
    };
    let rows: Vec<Row> = models.iter().map(|m| bench_model(m, &args, &tiw, &keys_dir)).collect();

    let md = markdown(&rows, args.runs, cpus, &cpu);
    println!("\n{md}");
    let md_path = args.out.join("convert.md");
    std::fs::write(&md_path, &md).expect("write convert.md");
    let js = to_json(&rows, &args, &tiw, cpus, &cpu);
    let js_path = args.out.join("convert.json");
    std::fs::write(&js_path, serde_json::to_string_pretty(&js).unwrap() + "\n").expect("write convert.json");
    eprintln!("wrote {} and {}", md_path.display(), js_path.display());
}
