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
use tiw_converters::{convert, safetensors_io, DType, Selection, TensorStore};

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
                eprintln!(
                    "usage: cargo bench --bench convert -- [--out DIR] [--quick] [--runs N] [--tiw PATH]"
                );
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
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
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
    let entries = doc["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no entries", path.display()));
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

/// Helper mode (`--rusage-helper PROG ARGS...`): runs PROG with stdout to /dev/null and
/// stderr inherited, reaps it with `wait4` and prints
/// `exit_ok wall_s user_s sys_s maxrss_kb minflt majflt` on stdout.
///
/// Why a helper: `ru_maxrss` is a per-process high-water mark that survives `exec`, and a
/// child started by `vfork`/`posix_spawn` (or `fork`) from this benchmark inherits the
/// benchmark's own peak (hundreds of MB of generated tensors). Started from this small helper
/// process instead, the child's peak is its own (plus at most the helper's ~2 MB), like
/// `/usr/bin/time -f %M` reports it.
fn rusage_helper(argv: &[std::ffi::OsString]) -> ! {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdout(Stdio::null());
    let t0 = Instant::now();
    #[allow(unused_mut)]
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        eprintln!("cannot start {:?}: {e}", argv[0]);
        std::process::exit(2)
    });
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
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
                eprintln!("wait4: {e}");
                std::process::exit(2)
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        // The child is reaped; `child` is not waited on again (dropping it does not wait).
        let ok = status & 0x7f == 0 && (status >> 8) & 0xff == 0;
        println!(
            "{} {wall} {} {} {} {} {}",
            ok as u8,
            ru.utime.secs(),
            ru.stime.secs(),
            ru.maxrss,
            ru.minflt,
            ru.majflt
        );
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        let st = child.wait().expect("wait");
        println!("{} {} 0 0 -1 0 0", st.success() as u8, t0.elapsed().as_secs_f64());
    }
    std::process::exit(0)
}

/// Runs `prog args` through [`rusage_helper`] (stdout discarded, stderr to `stderr_log`) and
/// returns its wall time (measured around spawn + reap in the helper) and resource usage.
/// Panics if it fails.
fn run_child(prog: &Path, args: &[&std::ffi::OsStr], what: &str, stderr_log: &Path) -> Run {
    let helper = std::env::current_exe().expect("current_exe");
    let out = Command::new(helper)
        .arg("--rusage-helper")
        .arg(prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(File::create(stderr_log).expect("stderr log"))
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start the rusage helper: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    if !out.status.success() || f.len() != 7 || f[0] != 1.0 {
        let log = std::fs::read_to_string(stderr_log).unwrap_or_default();
        panic!("{what} failed ({text:?}):\n{log}");
    }
    Run {
        wall_s: f[1].max(1e-9),
        user_s: f[2],
        sys_s: f[3],
        maxrss: (f[4] >= 0.0).then(|| f[4] as u64 * 1024),
        minflt: f[5] as u64,
        majflt: f[6] as u64,
    }
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
    inspect: Run,
    inspect_rss: Option<u64>,
    output_bytes: u64,
    /// In-process phases, best of N each: `checkpoint::open` + `extract`, SHA-256 of the
    /// mapped file, `safetensors_io::write` without the hash, the whole `convert_file`.
    lib_open_s: f64,
    lib_sha_s: f64,
    lib_write_s: f64,
    lib_convert_s: f64,
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
    fn gbps(&self, s: f64) -> f64 {
        self.size as f64 / s / 1e9
    }
}

fn min_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
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
    let read = min_of(&(0..args.runs).map(|_| read_through(&file)).collect::<Vec<_>>());

    let copy = out.join("copy.bin");
    let st = out.join("x.safetensors");
    let lib_st = out.join("lib.safetensors");
    let log = out.join("child-stderr.log");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let (mut cps, mut convs, mut insps) = (vec![], vec![], vec![]);
    let (mut opens, mut shas, mut writes, mut libs) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.runs {
        // Rounds interleave the commands so that drift affects all of them alike. Outputs
        // are removed before each run (untimed), so no run pays for unlinking an old file.
        remove(&copy);
        cps.push(run_child(
            Path::new("cp"),
            &[file.as_os_str(), copy.as_os_str()],
            "cp",
            &log,
        ));
        remove(&copy);

        remove(&st);
        let a = [os("convert"), file.as_os_str(), st.as_os_str(), os("--quiet")];
        convs.push(run_child(tiw, &a, "tiw convert", &log));
        if round + 1 < args.runs {
            remove(&st);
        }

        let a = [os("inspect"), file.as_os_str(), os("--json")];
        insps.push(run_child(tiw, &a, "tiw inspect", &log));

        // In-process: the library call, then its phases one by one.
        remove(&lib_st);
        let t0 = Instant::now();
        convert::convert_file(&file, &lib_st, &Selection::default(), &|_, _| {}).expect("convert_file");
        libs.push(t0.elapsed().as_secs_f64());
        remove(&lib_st);

        let t0 = Instant::now();
        let ck = tiw_converters::open(&file).expect("open");
        let ex = ck.extract(&Selection::default()).expect("extract");
        opens.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        std::hint::black_box(convert::sha256_hex(&ck.buf));
        shas.push(t0.elapsed().as_secs_f64());
        drop((ex, ck));

        let ck = tiw_converters::open(&file).expect("open");
        let ex = ck.extract(&Selection::default()).expect("extract");
        let names: Vec<&str> = ex.store.entries().iter().map(|e| e.name.as_str()).collect();
        let meta = safetensors_io::metadata(&ex.what, ex.config.as_ref(), Some((m.name, "")), &names);
        let t0 = Instant::now();
        safetensors_io::write(&ex.store, meta, &lib_st, &|_| {}, None).expect("safetensors write");
        writes.push(t0.elapsed().as_secs_f64());
        drop(names);
        drop((ex, ck));
        remove(&lib_st);

        eprintln!(
            "[{}] round {}: cp {:.3} s, convert {:.3} s, inspect {:.1} ms | in-process: convert_file {:.3} s, \
             open+extract {:.1} ms, sha256 {:.3} s, write {:.3} s",
            m.name,
            round + 1,
            cps[round].wall_s,
            convs[round].wall_s,
            insps[round].wall_s * 1e3,
            libs[round],
            opens[round] * 1e3,
            shas[round],
            writes[round],
        );
    }
    let (cp, cp_rss) = best(&cps);
    let (conv, convert_rss) = best(&convs);
    let (inspect, inspect_rss) = best(&insps);

    // Check the output: every tensor equal to the generated one, both writers identical.
    convert::convert_file(&file, &lib_st, &Selection::default(), &|_, _| {}).expect("convert_file");
    let output_bytes = std::fs::metadata(&st).expect("stat output").len();
    let ck = tiw_converters::open(&st).expect("open output");
    let ex = ck.extract(&Selection::default()).expect("extract output");
    assert_eq!(ex.store.len(), store.len(), "tensor count");
    for (want, got) in store.entries().iter().zip(ex.store.entries()) {
        assert_eq!(want.name, got.name, "state_dict order");
        assert_eq!(want.shape, got.shape, "{}: shape", want.name);
        assert!(
            store.bytes(want) == ex.store.bytes(got),
            "{}: data differs",
            want.name
        );
    }
    drop((ex, ck));
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
        inspect,
        inspect_rss,
        output_bytes,
        lib_open_s: min_of(&opens),
        lib_sha_s: min_of(&shas),
        lib_write_s: min_of(&writes),
        lib_convert_s: min_of(&libs),
    }
}

/// `tiw --version`: process start-up alone (dynamic loading of the linked libraries).
fn bench_startup(args: &Args, tiw: &Path) -> (Run, Option<u64>) {
    let log = args.out.join("child-stderr.log");
    let runs: Vec<Run> = (0..args.runs)
        .map(|_| run_child(tiw, &[std::ffi::OsStr::new("--version")], "tiw --version", &log))
        .collect();
    remove(&log);
    best(&runs)
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

fn mb(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}", b as f64 / MB))
        .unwrap_or_else(|| "n/a".into())
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

/// The 1-minute load average (other work on the machine skews the timings).
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|x| x.parse().ok()))
}

fn fname(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn markdown(
    rows: &[Row],
    startup: &(Run, Option<u64>),
    load: (Option<f64>, Option<f64>),
    runs: usize,
    cpus: usize,
    cpu: &str,
) -> String {
    let la = |l: Option<f64>| l.map(|l| format!("{l:.2}")).unwrap_or_else(|| "n/a".into());
    let mut s = String::new();
    s.push_str(&format!(
        "Machine: {cpus} CPUs ({cpu}); 1-min load average {} before, {} after. Best of {runs} runs, \
         interleaved, input warm in the page cache; peak RSS is the largest `ru_maxrss` over the \
         runs. MB = 10^6 bytes.\n\n",
        la(load.0),
        la(load.1)
    ));
    s.push_str(
        "| file | size MB | cp s | convert s | convert/cp | convert GB/s | peak RSS MB | RSS/input | inspect ms | lib convert s | lib/cp |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.3} | {:.3} | {:.2} ({}) | {:.2} | {} | {} | {:.1} ({}) | {:.3} | {:.2} |\n",
            fname(&r.file),
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
            r.lib_convert_s / r.cp.wall_s,
        ));
    }
    s.push_str(&format!(
        "\nTargets: convert/cp ≤ {TARGET_CONVERT_OVER_CP}, convert peak RSS ≤ {TARGET_RSS_OVER_INPUT}× input \
         + {TARGET_RSS_SLACK_MB} MB, inspect ≤ {TARGET_INSPECT_MS} ms. `lib convert` is the in-process \
         `convert::convert_file` call (no process start-up).\n\n"
    ));
    s.push_str(&format!(
        "Process start-up alone (`tiw --version`): {:.1} ms, peak RSS {} MB.\n\n",
        startup.0.wall_s * 1e3,
        mb(startup.1)
    ));
    s.push_str(
        "In-process phases (best of each): open+extract = `open` + `extract` (pickle parse, no tensor \
         data read); sha256 = `convert::sha256_hex` over the freshly mapped file; write = \
         `safetensors_io::write` without the hash.\n\n\
         | file | open+extract ms | sha256 s (GB/s) | write s (GB/s) | convert_file s (GB/s) |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.3} ({:.2}) | {:.3} ({:.2}) | {:.3} ({:.2}) |\n",
            fname(&r.file),
            r.lib_open_s * 1e3,
            r.lib_sha_s,
            r.gbps(r.lib_sha_s),
            r.lib_write_s,
            r.gbps(r.lib_write_s),
            r.lib_convert_s,
            r.gbps(r.lib_convert_s),
        ));
    }
    s.push_str(
        "\n| file | tensors | params | read GB/s (page cache) | cp GB/s | convert user+sys s | convert minor faults | \
         cp RSS MB | inspect RSS MB | output MB | pt_write s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.3}+{:.3} | {} | {} | {} | {:.1} | {:.2} |\n",
            fname(&r.file),
            r.tensors,
            r.params,
            r.gbps(r.read),
            r.gbps(r.cp.wall_s),
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

fn to_json(
    rows: &[Row],
    startup: &(Run, Option<u64>),
    load: (Option<f64>, Option<f64>),
    args: &Args,
    tiw: &Path,
    cpus: usize,
    cpu: &str,
) -> Value {
    json!({
        "bench": "convert",
        "runs": args.runs,
        "quick": args.quick,
        "tiw": tiw.display().to_string(),
        "machine": {"cpus": cpus, "cpu_model": cpu, "loadavg_1min_before": load.0, "loadavg_1min_after": load.1},
        "targets": {
            "convert_over_cp": TARGET_CONVERT_OVER_CP,
            "rss_over_input": TARGET_RSS_OVER_INPUT,
            "rss_slack_mb": TARGET_RSS_SLACK_MB,
            "inspect_ms": TARGET_INSPECT_MS,
        },
        "startup": run_json(&startup.0, startup.1),
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
            "lib": {
                "open_extract_s": r.lib_open_s,
                "sha256_s": r.lib_sha_s,
                "write_s": r.lib_write_s,
                "convert_file_s": r.lib_convert_s,
            },
            "output_bytes": r.output_bytes,
            "convert_over_cp": r.ratio(),
            "lib_convert_over_cp": r.lib_convert_s / r.cp.wall_s,
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
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() > 2 && argv[1] == "--rusage-helper" {
        rusage_helper(&argv[2..]);
    }
    let args = parse_args();
    std::fs::create_dir_all(&args.out).expect("create --out directory");
    let tiw = tiw_binary(&args);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let keys_dir = root.join("tests/fixtures/keys");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = cpu_model();
    eprintln!("tiw binary: {}", tiw.display());
    eprintln!("machine: {cpus} CPUs, {cpu}");
    let load_before = loadavg();
    if load_before.is_some_and(|l| l > 0.5) {
        eprintln!("warning: 1-minute load average {load_before:?}: other work will skew the timings");
    }
    let startup = bench_startup(&args, &tiw);
    let models: Vec<&Model> = if args.quick {
        MODELS.iter().filter(|m| m.name == "adm_classifier_32").collect()
    } else {
        MODELS.iter().collect()
    };
    let rows: Vec<Row> = models
        .iter()
        .map(|m| bench_model(m, &args, &tiw, &keys_dir))
        .collect();

    let load = (load_before, loadavg());
    let md = markdown(&rows, &startup, load, args.runs, cpus, &cpu);
    println!("\n{md}");
    let md_path = args.out.join("convert.md");
    std::fs::write(&md_path, &md).expect("write convert.md");
    let js = to_json(&rows, &startup, load, &args, &tiw, cpus, &cpu);
    let js_path = args.out.join("convert.json");
    std::fs::write(&js_path, serde_json::to_string_pretty(&js).unwrap() + "\n").expect("write convert.json");
    eprintln!("wrote {} and {}", md_path.display(), js_path.display());
}
