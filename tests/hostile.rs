//! Hostile and broken input.
//!
//! * Every crafted file of `tests/fixtures/hostile/` (written by
//!   `scripts/make_hostile_corpus.py`, described in its `expected.json`) fails with an error
//!   that names the file and the problem, without panicking or hanging; the few well-formed
//!   but hostile ones (amplification, reference cycles) load within bounds.
//! * Files that call code-execution globals (`os.system`, `builtins.eval`,
//!   `subprocess.Popen`, ...) are refused by `extract`, while `inspect` reports the globals
//!   as dangerous and opaque; nothing is ever executed.
//! * Memory: a counting global allocator measures the peak heap of every corpus file and
//!   every mutant in-process (bound `32 × input size + 64 MiB`); and `tiw inspect` on the
//!   larger corpus files, the seeds, the real fixtures and a few large mutated inputs runs in
//!   a child process whose peak RSS (GNU `time -f %M`) stays below
//!   `baseline + 32 × file size + 64 MiB`, killed after 20 s (a hang check, not a benchmark).
//! * A mutation test derives ≥ 100,000 inputs from seed files (bit flips, byte sets,
//!   interesting integers, truncation, chunk deletion/duplication/insertion, splices), aimed at
//!   the pickle / zip / header bytes rather than raw tensor data, and runs each through
//!   `from_buffer` → `inspect::report` → `extract` → tensor bytes under `catch_unwind`.
//!   A stack overflow aborts the process and cannot be caught; the VM and walkers are
//!   iterative or depth-bounded so that none is expected.

use std::alloc::{GlobalAlloc, Layout, System};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use tiw_converters::checkpoint::{self, Kind};
use tiw_converters::inspect::{self, class_name};
use tiw_converters::pickle::Obj;
use tiw_converters::store::TensorData;
use tiw_converters::{convert, pt_write, safetensors_io, Buffer, Selection, What};

/// Wall-clock limit per input before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Heap allowed for one input beyond `32 × its size`.
const HEAP_SLACK: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// heap accounting: per-thread current and peak bytes (each input runs on one thread)
// ---------------------------------------------------------------------------------------

struct CountingAlloc;

thread_local! {
    static HEAP: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn note(delta: isize) {
    let _ = HEAP.try_with(|h| {
        let (cur, peak) = h.get();
        let cur = cur + delta;
        h.set((cur, peak.max(cur)));
    });
}

// SAFETY: delegates every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            note(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        note(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            note(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result and the peak extra heap it used on this thread.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = HEAP.with(|h| {
        let (cur, _) = h.get();
        h.set((cur, cur));
        cur
    });
    let r = f();
    let peak = HEAP.with(|h| h.get().1);
    (r, (peak - start).max(0) as usize)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hostile_dir() -> PathBuf {
    root().join("tests/fixtures/hostile")
}

/// One entry of `expected.json`.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    description: String,
    /// Substring the error must contain; `None`: the file may load (it must stay bounded).
    error: Option<String>,
    /// `open` (from_buffer fails), `extract` (opens, extract fails) or `any`.
    stage: String,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(hostile_dir().join("expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("expected.json is JSON");
    v.as_object()
        .expect("expected.json is an object")
        .iter()
        .map(|(name, c)| Case {
            name: name.clone(),
            description: c["description"].as_str().unwrap_or_default().to_string(),
            error: c["error"].as_str().map(str::to_string),
            stage: c["stage"].as_str().unwrap_or("any").to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// panics: caught per input; the default hook stays silent on our worker threads
// ---------------------------------------------------------------------------------------

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records the message and location of panics on threads
/// named `hostile-*` instead of printing them, and delegates everything else.
fn quiet_worker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("hostile-"));
            if ours {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                prev(info);
            }
        }));
    });
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    };
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or(msg)
}

// ---------------------------------------------------------------------------------------
// running one input through everything a user can do with it
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    /// `open` / `from_buffer` failed.
    OpenErr(String),
    /// Opened; `extract` failed.
    ExtractErr {
        msg: String,
        report_error: Option<String>,
    },
    /// Extracted this many tensors.
    Ok { tensors: usize },
}

/// Opens, inspects and extracts; reads the bytes of every extracted tensor (what `convert`
/// does), up to `max_tensor_bytes` per tensor.
fn exercise(path: &Path, buf: Option<Arc<Buffer>>, max_tensor_bytes: usize) -> Outcome {
    let opened = match buf {
        Some(b) => checkpoint::from_buffer(path, b),
        None => tiw_converters::open(path),
    };
    let ck = match opened {
        Ok(ck) => ck,
        Err(e) => return Outcome::OpenErr(e.to_string()),
    };
    let kind = ck.kind();
    std::hint::black_box(ck.top_keys());
    let report = inspect::report(&ck);
    std::hint::black_box(report.to_json().to_text());
    let sel = Selection::default();
    let ex = match ck.extract(&sel) {
        Ok(ex) => ex,
        Err(e) => {
            return Outcome::ExtractErr {
                msg: e.to_string(),
                report_error: report.extract_error.clone(),
            }
        }
    };
    if kind == Kind::TrainingState {
        let all = Selection {
            key: None,
            what: What::All,
        };
        std::hint::black_box(ck.extract(&all).map(|x| x.store.len()).ok());
    }
    if kind == Kind::EdmSnapshot {
        let other = Selection {
            key: Some("loss_fn".into()),
            what: What::Net,
        };
        std::hint::black_box(ck.extract(&other).map(|x| x.store.len()).ok());
    }
    for e in ex.store.entries() {
        if e.nbytes() <= max_tensor_bytes {
            let b = ex.store.bytes(e);
            assert_eq!(
                b.len(),
                e.nbytes(),
                "{}: byte length of {}",
                path.display(),
                e.name
            );
        }
    }
    if let Some(c) = &ex.config {
        std::hint::black_box(c.to_text());
    }
    Outcome::Ok {
        tensors: ex.store.len(),
    }
}

/// Runs `f` on a named worker thread; `Err` on panic (with its message) or after `limit`.
fn guarded<T: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    quiet_worker_panics();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("hostile-{name}"))
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(panic_text);
            let _ = tx.send(r);
        })
        .expect("spawn");
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => Err(format!("PANIC: {p}")),
        Err(_) => Err(format!("HANG: no result after {limit:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// 1. the corpus
// ---------------------------------------------------------------------------------------

#[test]
fn corpus_is_complete_and_listed() {
    let cases = cases();
    let with_error = cases.iter().filter(|c| c.error.is_some()).count();
    assert!(with_error >= 25, "only {with_error} corpus files expect an error");
    let listed: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let mut on_disk = std::collections::BTreeSet::new();
    let mut total = 0u64;
    for e in std::fs::read_dir(hostile_dir()).unwrap() {
        let e = e.unwrap();
        total += e.metadata().unwrap().len();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file() && name != "expected.json" {
            on_disk.insert(name);
        }
    }
    let on_disk: std::collections::BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(
        listed, on_disk,
        "expected.json and the files of tests/fixtures/hostile differ"
    );
    for c in &cases {
        assert!(
            matches!(c.stage.as_str(), "open" | "extract" | "any"),
            "{}: stage {}",
            c.name,
            c.stage
        );
        assert!(!c.description.is_empty(), "{}: no description", c.name);
    }
    assert!(total < 2 << 20, "corpus is {total} bytes (keep it under 2 MB)");
}

#[test]
fn corpus_files_fail_with_named_errors() {
    let cases = cases();
    let mut failures = Vec::new();
    let mut errors = 0;
    let mut worst_heap = (0, String::new());
    for c in &cases {
        let path = hostile_dir().join(&c.name);
        let p = path.clone();
        let t = Instant::now();
        let size = std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
        let outcome = guarded("corpus", HANG, move || peak_heap(|| exercise(&p, None, 1 << 26)));
        let outcome = outcome.map(|(o, heap)| {
            if heap > 32 * size + HEAP_SLACK {
                failures.push(format!(
                    "{}: peak heap {heap} bytes for a {size}-byte file",
                    c.name
                ));
            }
            if heap > worst_heap.0 {
                worst_heap = (heap, c.name.clone());
            }
            o
        });
        let dt = t.elapsed();
        let (msg, stage) = match &outcome {
            Err(e) => {
                println!("{:<48} {e}", c.name);
                failures.push(format!("{}: {e}", c.name));
                continue;
            }
            Ok(Outcome::OpenErr(m)) => (Some(m.clone()), "open"),
            Ok(Outcome::ExtractErr { msg, report_error }) => {
                if report_error.is_none() {
                    failures.push(format!(
                        "{}: extract failed but inspect's report shows no error",
                        c.name
                    ));
                }
                (Some(msg.clone()), "extract")
            }
            Ok(Outcome::Ok { tensors }) => {
                println!("{:<48} ok: {tensors} tensors ({dt:.2?})", c.name);
                (None, "ok")
            }
        };
        if let Some(m) = &msg {
            errors += 1;
            println!("{:<48} [{stage}] {m}", c.name);
            if m.contains('\n') {
                failures.push(format!("{}: error spans several lines: {m:?}", c.name));
            }
        }
        match (&c.error, &msg) {
            (Some(want), Some(m)) => {
                if !m.contains(want.as_str()) {
                    failures.push(format!("{}: error {m:?} does not contain {want:?}", c.name));
                }
                if !m.contains(c.name.as_str()) {
                    failures.push(format!("{}: error {m:?} does not name the file", c.name));
                }
                if c.stage != "any" && c.stage != stage {
                    failures.push(format!("{}: failed at {stage}, expected at {}", c.name, c.stage));
                }
            }
            (Some(want), None) => failures.push(format!(
                "{}: loaded without error, expected one containing {want:?} ({})",
                c.name, c.description
            )),
            (None, _) => {}
        }
        if dt > Duration::from_secs(5) {
            failures.push(format!("{}: took {dt:?}", c.name));
        }
    }
    println!(
        "{} corpus files, {errors} rejected with an error; largest peak heap {:.1} MiB ({})",
        cases.len(),
        worst_heap.0 as f64 / (1 << 20) as f64,
        worst_heap.1
    );
    assert!(
        failures.is_empty(),
        "corpus failures:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn seeds_are_valid_checkpoints() {
    for (name, kind, tensors) in [
        ("state_dict.pt", Kind::StateDict, 2),
        ("state_dict_legacy.pt", Kind::StateDict, 2),
        ("edm_snapshot.pkl", Kind::EdmSnapshot, 1),
        ("training_state.pt", Kind::TrainingState, 2),
    ] {
        let path = hostile_dir().join("seeds").join(name);
        let ck = tiw_converters::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ck.kind(), kind, "{name}");
        let ex = ck
            .extract(&Selection::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ex.store.len(), tensors, "{name}");
    }
}

/// The committed corpus is exactly what the generator writes (when python3 is available).
#[test]
fn corpus_matches_generator() {
    let python = std::env::var("TIW_PY").unwrap_or_else(|_| "python3".into());
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(root().join("scripts/make_hostile_corpus.py"))
        .arg("--out")
        .arg(tmp.path())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "make_hostile_corpus.py failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            println!("SKIPPED: cannot run {python} ({e}); corpus not regenerated");
            return;
        }
    };
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let mut files = vec!["expected.json".to_string()];
    files.extend(cases().into_iter().map(|c| c.name));
    for s in std::fs::read_dir(hostile_dir().join("seeds")).unwrap() {
        files.push(format!("seeds/{}", s.unwrap().file_name().to_string_lossy()));
    }
    for f in files {
        let committed = std::fs::read(hostile_dir().join(&f)).unwrap();
        let fresh = std::fs::read(tmp.path().join(&f)).unwrap_or_default();
        assert!(
            committed == fresh,
            "{f} differs from what scripts/make_hostile_corpus.py writes; rerun it"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. code-execution globals: opaque in inspect, refused by extract
// ---------------------------------------------------------------------------------------

#[test]
fn malicious_globals_are_opaque_and_refused() {
    let canary = Path::new("/tmp/tiw-pwned");
    let _ = std::fs::remove_file(canary);
    for (file, global) in [
        ("os_system.pkl", "os.system"),
        ("builtins_eval.pkl", "builtins.eval"),
        ("subprocess_popen.pkl", "subprocess.Popen"),
        ("zip_state_dict_with_posix_system.pt", "posix.system"),
        ("edm_snapshot_with_exec.pkl", "builtins.exec"),
        ("getattr_chain.pkl", "builtins.getattr"),
    ] {
        let path = hostile_dir().join(file);
        let ck = tiw_converters::open(&path).unwrap_or_else(|e| panic!("{file}: decoding must succeed: {e}"));
        let report = inspect::report(&ck);
        assert!(
            report.dangerous_globals().contains(&global),
            "{file}: {global} not among the dangerous globals {:?}",
            report.dangerous_globals()
        );
        let g = report.globals.iter().find(|g| g.0 == global).unwrap();
        assert_eq!(class_name(g.1), "dangerous", "{file}");
        assert!(g.3 >= 1, "{file}: the call of {global} is not counted");
        let json = report.to_json().to_text();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let entry = v["globals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == global)
            .unwrap_or_else(|| panic!("{file}: {global} missing from the JSON report"));
        assert_eq!(entry["opaque"], true, "{file}");
        assert_eq!(entry["class"], "dangerous", "{file}");
        assert!(report.tensors.is_empty(), "{file}: tensors listed");
        let ie = report.extract_error.as_deref().unwrap_or_default();
        assert!(
            ie.contains("refused") && ie.contains(global),
            "{file}: report error {ie:?}"
        );
        // the call is an opaque node in the object graph, never a result
        let calls = (0..ck.arena.len() as u32)
            .filter(|&i| matches!(ck.arena.get(i), Obj::Call { func, .. } if ck.arena.global_name(*func).as_deref() == Some(global)))
            .count();
        assert!(calls >= 1, "{file}: no opaque call node of {global}");
        let err = ck
            .extract(&Selection::default())
            .err()
            .unwrap_or_else(|| panic!("{file}: extract succeeded"));
        let msg = err.to_string();
        println!("{file}: {msg}");
        assert!(
            msg.contains("refused") && msg.contains(global) && msg.contains(file),
            "{msg}"
        );
    }
    assert!(
        !canary.exists(),
        "{} exists: something executed a pickle",
        canary.display()
    );
}

// ---------------------------------------------------------------------------------------
// 3. memory and time of `tiw inspect` in a child process
// ---------------------------------------------------------------------------------------

/// GNU time, if present and working (`-f %M` = peak RSS in KiB).
fn gnu_time() -> Option<PathBuf> {
    let t = PathBuf::from("/usr/bin/time");
    let ok = Command::new(&t)
        .args(["-f", "%M", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(t)
}

/// Runs `tiw inspect file` (under GNU time when given); returns (exit code, peak RSS KiB).
fn inspect_child(time: Option<&Path>, file: &Path, scratch: &Path) -> Result<(i32, Option<u64>), String> {
    let tiw = env!("CARGO_BIN_EXE_tiw");
    let rss_out = scratch.join(format!(
        "rss-{}-{}",
        std::process::id(),
        file.file_name().unwrap().to_string_lossy()
    ));
    let mut cmd = match time {
        Some(t) => {
            let mut c = Command::new(t);
            c.arg("-f").arg("%M").arg("-o").arg(&rss_out).arg(tiw);
            c
        }
        None => Command::new(tiw),
    };
    cmd.arg("inspect")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // own process group, so that a hang can be killed together with GNU time's child
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if t0.elapsed() > HANG {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("HANG: killed after {HANG:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let code = status.code().unwrap_or(-1);
    if code != 0 && code != 1 {
        return Err(format!(
            "exit status {status} ({})",
            stderr.trim().lines().next().unwrap_or("")
        ));
    }
    if code == 1 && !stderr.starts_with("error: ") {
        return Err(format!("exit status 1 without an error line: {stderr:?}"));
    }
    let rss = std::fs::read_to_string(&rss_out)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse::<u64>().ok()));
    let _ = std::fs::remove_file(&rss_out);
    Ok((code, rss))
}

#[test]
fn inspect_memory_is_bounded() {
    let time = gnu_time();
    if time.is_none() {
        println!("SKIPPED (memory part): /usr/bin/time (GNU time) not found; only the 20 s hang check runs");
    }
    let scratch = tempfile::tempdir().unwrap();
    let (code, base) = inspect_child(
        time.as_deref(),
        &hostile_dir().join("seeds/state_dict.pt"),
        scratch.path(),
    )
    .expect("tiw inspect on a tiny valid file");
    assert_eq!(code, 0);
    println!(
        "baseline peak RSS of `tiw inspect` on a tiny file: {:?} KiB",
        base
    );

    // Every corpus file's heap is bounded in-process (corpus_files_fail_with_named_errors);
    // here the larger ones and those that load, in a real process (each start loads
    // libtorch, ~0.3 s, so not all hundred small ones).
    let mut files: Vec<PathBuf> = cases()
        .iter()
        .map(|c| (hostile_dir().join(&c.name), c.error.is_none()))
        .filter(|(p, loads)| *loads || std::fs::metadata(p).is_ok_and(|m| m.len() >= 16 << 10))
        .map(|(p, _)| p)
        .collect();
    // and a sample of the small ones
    let sample: Vec<PathBuf> = cases()
        .iter()
        .step_by(8)
        .map(|c| hostile_dir().join(&c.name))
        .filter(|p| !files.contains(p))
        .collect();
    files.extend(sample);
    for s in std::fs::read_dir(hostile_dir().join("seeds")).unwrap() {
        files.push(s.unwrap().path());
    }
    for f in [
        "classifier/discriminator.pt",
        "classifier/discriminator_cond_legacy.pt",
        "nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl",
        "loss/training-state-002560.pt",
    ] {
        files.push(root().join("tests/fixtures").join(f));
    }
    // a few large mutated inputs: real checkpoints with mutations in their pickle bytes
    for seed in big_seeds() {
        for k in 0..3u64 {
            let mut rng = Rng::new(fnv(&seed.name) ^ ((k + 1) * 0x51_7cc1_b727_220a));
            let mut bytes = seed.bytes.clone();
            for _ in 0..4 {
                let at = seed.pick(&mut rng);
                mutate_in_place(&mut bytes, at, &mut rng, None);
            }
            let p = scratch
                .path()
                .join(format!("mutated-{k}-{}", seed.name.replace('/', "_")));
            std::fs::write(&p, &bytes).unwrap();
            files.push(p);
        }
    }

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let queue = Mutex::new(files.clone());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(f) = queue.lock().unwrap().pop() else {
                    break;
                };
                let r = inspect_child(time.as_deref(), &f, scratch.path());
                results.lock().unwrap().push((f, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failures = Vec::new();
    let mut worst = (0f64, String::new());
    for (f, r) in &results {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        let name = f.file_name().unwrap().to_string_lossy();
        match r {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok((code, rss)) => {
                if let (Some(base), Some(rss)) = (base, rss) {
                    let bound = base + 32 * size / 1024 + 64 * 1024;
                    let extra = rss.saturating_sub(base) as f64 / 1024.0;
                    println!("{name:<56} exit {code}  {size:>9} B  peak RSS {rss:>7} KiB (+{extra:.1} MiB, bound {bound} KiB)");
                    if *rss > bound {
                        failures.push(format!(
                            "{name}: peak RSS {rss} KiB > bound {bound} KiB ({size} bytes)"
                        ));
                    }
                    let ratio = rss.saturating_sub(base) as f64 / (size.max(1) as f64 / 1024.0);
                    if size > 100_000 && ratio > worst.0 {
                        worst = (ratio, name.to_string());
                    }
                }
            }
        }
    }
    println!(
        "{} files; largest extra RSS per input KiB among inputs > 100 kB: {:.2} ({})",
        results.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "tiw inspect failures:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// 4. mutation test
// ---------------------------------------------------------------------------------------

/// xorshift64* (deterministic, no dependencies).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A mutation seed: bytes, the ranges worth mutating, and how many mutants to derive.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    /// Byte ranges outside raw tensor data (pickle, zip records, headers).
    regions: Vec<(usize, usize)>,
    count: usize,
    /// Large file: mutate in place and restore (no copy per mutant), mostly same-size ops.
    in_place: bool,
    /// Container structure, so that half the mutants can change the inner stream alone.
    structure: Structure,
}

/// What a seed is made of, for structure-aware mutants.
enum Structure {
    Flat,
    /// A zip archive: its members in order and which one is `data.pkl`; such mutants change
    /// `data.pkl` only (any mutation, lengths included) and re-zip, so the VM sees them.
    Zip {
        members: Vec<(String, Vec<u8>)>,
        pkl: usize,
    },
    /// safetensors: header JSON and data; such mutants change the header and fix its length.
    Safetensors {
        header: Vec<u8>,
        data: Vec<u8>,
    },
}

fn structure_of(bytes: &[u8]) -> Structure {
    if bytes.starts_with(b"PK\x03\x04") {
        let Ok(mut z) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
            return Structure::Flat;
        };
        let mut members = Vec::new();
        for i in 0..z.len() {
            use std::io::Read;
            let Ok(mut f) = z.by_index_raw(i) else {
                return Structure::Flat;
            };
            let mut data = Vec::new();
            if f.read_to_end(&mut data).is_err() {
                return Structure::Flat;
            }
            members.push((f.name().to_string(), data));
        }
        return match members.iter().position(|(n, _)| n.ends_with("data.pkl")) {
            Some(pkl) => Structure::Zip { members, pkl },
            None => Structure::Flat,
        };
    }
    if bytes.len() > 8 && bytes[8] == b'{' {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        if let Some(header) = bytes.get(8..8 + n) {
            return Structure::Safetensors {
                header: header.to_vec(),
                data: bytes[8 + n..].to_vec(),
            };
        }
    }
    Structure::Flat
}

/// A stored zip of `members` (what torch.save writes, minus alignment).
fn rezip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        w.start_file(name.as_str(), opt).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

impl Seed {
    fn new(name: &str, bytes: Vec<u8>, count: usize) -> Seed {
        let regions = interesting_regions(name, &bytes);
        let in_place = bytes.len() > 64 * 1024;
        Seed {
            name: name.to_string(),
            in_place,
            structure: if in_place {
                Structure::Flat
            } else {
                structure_of(&bytes)
            },
            bytes,
            regions,
            count,
        }
    }

    fn region_bytes(&self) -> usize {
        self.regions.iter().map(|(a, b)| b - a).sum()
    }

    /// A position inside the interesting regions (uniform over their bytes).
    fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.region_bytes();
        if total == 0 {
            return rng.below(self.bytes.len().max(1));
        }
        let mut k = rng.below(total);
        for (a, b) in &self.regions {
            if k < b - a {
                return a + k;
            }
            k -= b - a;
        }
        unreachable!()
    }
}

/// Everything but the raw bytes of tensor storages, found by decoding the intact seed.
fn interesting_regions(name: &str, bytes: &[u8]) -> Vec<(usize, usize)> {
    let Ok(ck) = checkpoint::from_buffer(Path::new(name), Arc::new(Buffer::Owned(bytes.to_vec()))) else {
        return vec![(0, bytes.len())];
    };
    let mut data: Vec<(usize, usize)> = Vec::new();
    for i in 0..ck.arena.len() as u32 {
        if let Obj::Storage(s) = ck.arena.get(i) {
            if let Some((start, len)) = s.data {
                data.push((start, start + len));
            }
        }
    }
    if let Some((st, _)) = &ck.safetensors {
        for e in st.entries() {
            if let TensorData::View {
                storage_start,
                storage_len,
                ..
            } = e.data
            {
                data.push((storage_start, storage_start + storage_len));
            }
        }
    }
    data.sort();
    let mut out = Vec::new();
    let mut at = 0;
    for (a, b) in data {
        // keep the first and last 8 bytes of each storage: boundaries are interesting
        let (a, b) = (a + 8.min(b - a), b.saturating_sub(8).max(a));
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < bytes.len() {
        out.push((at, bytes.len()));
    }
    out
}

const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, b'.', b'(', b')', b'R', b'b', b'Q', b'}', b']', b'q', b'h', b'j',
    b'X', b't', b'u', b'e', b's', b'a', b'c', b'N', b'K', b'M', b'J', 0x8a, 0x8c, 0x93, 0x94, 0x95,
];

const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

/// A same-size mutation at `at` (bit flip, byte set, interesting integer).
fn mutate_in_place(
    bytes: &mut [u8],
    at: usize,
    rng: &mut Rng,
    log: Option<&mut Vec<String>>,
) -> Vec<(usize, u8)> {
    let mut undo = Vec::new();
    if bytes.is_empty() {
        return undo;
    }
    let at = at.min(bytes.len() - 1);
    let what = match rng.below(4) {
        0 => {
            let bit = rng.below(8);
            undo.push((at, bytes[at]));
            bytes[at] ^= 1 << bit;
            format!("flip bit {bit} at {at}")
        }
        1 => {
            let v = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            undo.push((at, bytes[at]));
            bytes[at] = v;
            format!("set byte {at} to {v:#04x}")
        }
        2 => {
            let v = rng.next() as u8;
            undo.push((at, bytes[at]));
            bytes[at] = v;
            format!("set byte {at} to random {v:#04x}")
        }
        _ => {
            let v = INTERESTING_INTS[rng.below(INTERESTING_INTS.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let n = width.min(bytes.len() - at);
            for (i, b) in v.to_le_bytes()[..n].iter().enumerate() {
                undo.push((at + i, bytes[at + i]));
                bytes[at + i] = *b;
            }
            format!("write {v:#x} as u{} at {at}", width * 8)
        }
    };
    if let Some(l) = log {
        l.push(what);
    }
    undo
}

/// A mutant of a small seed: half of the zip and safetensors ones change only the inner
/// pickle / header (re-zipped, length fixed), the others any bytes worth changing.
fn derive(seed: &Seed, donors: &[Vec<u8>], rng: &mut Rng, mut log: Option<&mut Vec<String>>) -> Vec<u8> {
    match &seed.structure {
        Structure::Zip { members, pkl } if rng.chance(2) => {
            if let Some(l) = log.as_deref_mut() {
                l.push(format!("in {} (then re-zipped):", members[*pkl].0));
            }
            let inner = &members[*pkl].1;
            let n = inner.len().max(1);
            let mutated = mutate(inner, &|r: &mut Rng| r.below(n), donors, rng, log);
            let mut m = members.clone();
            m[*pkl].1 = mutated;
            rezip(&m)
        }
        Structure::Safetensors { header, data } if rng.chance(2) => {
            if let Some(l) = log.as_deref_mut() {
                l.push("in the header (length fixed):".into());
            }
            let n = header.len().max(1);
            let h = mutate(header, &|r: &mut Rng| r.below(n), donors, rng, log);
            let mut out = (h.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out
        }
        _ => mutate(&seed.bytes, &|r: &mut Rng| seed.pick(r), donors, rng, log),
    }
}

/// Any mutation (size-changing ones included) of `base`, at positions drawn by `pick`.
fn mutate(
    base: &[u8],
    pick: &dyn Fn(&mut Rng) -> usize,
    donors: &[Vec<u8>],
    rng: &mut Rng,
    mut log: Option<&mut Vec<String>>,
) -> Vec<u8> {
    let mut b = base.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if b.is_empty() {
            break;
        }
        let at = if b.len() == base.len() {
            pick(rng)
        } else {
            rng.below(b.len())
        }
        .min(b.len() - 1);
        let max_chunk = if rng.chance(4) { 256 } else { 16 };
        let chunk = 1 + rng.below(max_chunk);
        let end = (at + chunk).min(b.len());
        let what = match rng.below(10) {
            0..=3 => {
                mutate_in_place(&mut b, at, rng, log.as_deref_mut());
                continue;
            }
            4 => {
                b.truncate(at);
                format!("truncate at {at}")
            }
            5 => {
                b.drain(at..end);
                format!("delete {at}..{end}")
            }
            6 => {
                let dup: Vec<u8> = b[at..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, dup);
                format!("copy {at}..{end} to {to}")
            }
            7 => {
                let ins: Vec<u8> = (0..chunk)
                    .map(|_| INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())])
                    .collect();
                b.splice(at..at, ins.iter().copied());
                format!("insert {ins:02x?} at {at}")
            }
            8 => {
                let d = &donors[rng.below(donors.len())];
                if d.is_empty() {
                    continue;
                }
                let from = rng.below(d.len());
                let to = (from + chunk).min(d.len());
                let n = (to - from).min(b.len() - at);
                b[at..at + n].copy_from_slice(&d[from..from + n]);
                format!("splice {n} donor bytes at {at}")
            }
            _ => {
                let to = rng.below(b.len());
                let n = (end - at).min(b.len() - to.max(at));
                if n > 0 && to != at {
                    let tmp: Vec<u8> = b[to..to + n].to_vec();
                    b.copy_within(at..at + n, to);
                    b[at..at + n].copy_from_slice(&tmp[..n]);
                }
                format!("swap {n} bytes at {at} and {to}")
            }
        };
        if let Some(l) = log.as_deref_mut() {
            l.push(what);
        }
    }
    b
}

/// Real checkpoints, mutated in place within their pickle / zip records.
fn big_seeds() -> Vec<Seed> {
    [
        ("classifier/discriminator.pt", 1500),
        ("classifier/discriminator_cond_legacy.pt", 1500),
        ("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl", 150),
        ("loss/training-state-002560.pt", 120),
    ]
    .into_iter()
    .map(|(f, n)| {
        Seed::new(
            f,
            std::fs::read(root().join("tests/fixtures").join(f)).unwrap(),
            n,
        )
    })
    .collect()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    inputs: usize,
    open_err: usize,
    extract_err: usize,
    ok: usize,
    /// Largest peak heap of one input.
    max_heap: usize,
    /// Largest `peak heap − 32 × input size`.
    max_excess: isize,
}

struct Failure {
    seed: String,
    index: usize,
    what: String,
    ops: Vec<String>,
    saved: PathBuf,
}

#[test]
fn mutation_never_panics() {
    quiet_worker_panics();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // seeds: the generated small checkpoints, what our writers produce, small corpus files,
    // and real fixtures
    let mut seeds = Vec::new();
    for (f, n) in [
        ("state_dict.pt", 19_000),
        ("state_dict_legacy.pt", 19_000),
        ("edm_snapshot.pkl", 17_000),
        ("training_state.pt", 12_000),
    ] {
        seeds.push(Seed::new(
            &format!("seeds/{f}"),
            std::fs::read(hostile_dir().join("seeds").join(f)).unwrap(),
            n,
        ));
    }
    let st = tmp.path().join("edm_snapshot.safetensors");
    convert::convert_file(
        &hostile_dir().join("seeds/edm_snapshot.pkl"),
        &st,
        &Selection::default(),
        &|_, _| {},
    )
    .expect("convert the EDM seed to safetensors");
    seeds.push(Seed::new(
        "converted.safetensors",
        std::fs::read(&st).unwrap(),
        12_000,
    ));
    let pt = tmp.path().join("state_dict.pt");
    convert::convert_file(
        &hostile_dir().join("seeds/training_state.pt"),
        &pt,
        &Selection {
            key: None,
            what: What::All,
        },
        &|_, _| {},
    )
    .expect("convert the training-state seed to .pt");
    seeds.push(Seed::new("converted.pt", std::fs::read(&pt).unwrap(), 12_000));
    for c in cases() {
        let bytes = std::fs::read(hostile_dir().join(&c.name)).unwrap();
        if bytes.len() <= 4096 {
            seeds.push(Seed::new(&c.name, bytes, 80));
        }
    }
    seeds.extend(big_seeds());
    let donors: Vec<Vec<u8>> = seeds
        .iter()
        .filter(|s| !s.in_place)
        .map(|s| s.bytes.clone())
        .collect();
    let total: usize = seeds.iter().map(|s| s.count).sum();
    assert!(total >= 100_000, "only {total} mutants");

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tallies = Mutex::new(vec![Tally::default(); seeds.len()]);
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let slowest = Mutex::new((Duration::ZERO, String::new()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (seeds, donors, tallies, failures, slowest, failed) =
                (&seeds, &donors, &tallies, &failures, &slowest, &failed);
            let tmp = tmp.path();
            std::thread::Builder::new()
                .name(format!("hostile-mutate-{t}"))
                .spawn_scoped(s, move || {
                    for (si, seed) in seeds.iter().enumerate() {
                        let mut tally = Tally::default();
                        let mut working = if seed.in_place {
                            seed.bytes.clone()
                        } else {
                            Vec::new()
                        };
                        let path = PathBuf::from(&seed.name);
                        for i in (t..seed.count).step_by(threads) {
                            let mut rng =
                                Rng::new(fnv(&seed.name) ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                            let started = Instant::now();
                            let mut len = seed.bytes.len();
                            let (r, undo) = if seed.in_place {
                                let mut undo = Vec::new();
                                let truncated = rng.chance(16);
                                let buf = if truncated {
                                    let at = seed.pick(&mut rng);
                                    Buffer::Owned(seed.bytes[..at].to_vec())
                                } else {
                                    for _ in 0..1 + rng.below(2) {
                                        let at = seed.pick(&mut rng);
                                        undo.extend(mutate_in_place(&mut working, at, &mut rng, None));
                                    }
                                    Buffer::Owned(std::mem::take(&mut working))
                                };
                                let buf = Arc::new(buf);
                                let r = catch_unwind(AssertUnwindSafe(|| {
                                    peak_heap(|| exercise(&path, Some(buf.clone()), 1 << 16))
                                }));
                                if !truncated {
                                    working = match Arc::try_unwrap(buf) {
                                        Ok(Buffer::Owned(v)) => v,
                                        _ => seed.bytes.clone(),
                                    };
                                }
                                (r, undo)
                            } else {
                                let bytes = derive(seed, donors, &mut rng, None);
                                len = bytes.len();
                                let r = catch_unwind(AssertUnwindSafe(|| {
                                    let buf = Arc::new(Buffer::Owned(bytes.clone()));
                                    let (o, heap) = peak_heap(|| exercise(&path, Some(buf), 1 << 20));
                                    if matches!(o, Outcome::Ok { .. }) && i % 97 == 0 {
                                        write_back(&path, bytes, tmp, t);
                                    }
                                    (o, heap)
                                }));
                                (r, Vec::new())
                            };
                            for (at, old) in undo.into_iter().rev() {
                                working[at] = old;
                            }
                            let dt = started.elapsed();
                            {
                                let mut sl = slowest.lock().unwrap();
                                if dt > sl.0 {
                                    *sl = (dt, format!("{} mutant {i}", seed.name));
                                }
                            }
                            tally.inputs += 1;
                            let what = match r {
                                Ok((o, heap)) => {
                                    match o {
                                        Outcome::OpenErr(_) => tally.open_err += 1,
                                        Outcome::ExtractErr { .. } => tally.extract_err += 1,
                                        Outcome::Ok { .. } => tally.ok += 1,
                                    }
                                    tally.max_excess =
                                        tally.max_excess.max(heap as isize - 32 * len as isize);
                                    tally.max_heap = tally.max_heap.max(heap);
                                    (heap > 32 * len + HEAP_SLACK)
                                        .then(|| format!("peak heap {heap} bytes for a {len}-byte input"))
                                }
                                Err(p) => Some(format!("PANIC: {}", panic_text(p))),
                            };
                            let what = what
                                .or_else(|| (dt > Duration::from_secs(10)).then(|| format!("took {dt:?}")));
                            if let Some(what) = what {
                                // keep (and save) the first few; count all
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if failures.lock().unwrap().len() < 16 {
                                    let f = describe_failure(seed, donors, i, what);
                                    failures.lock().unwrap().push(f);
                                }
                            }
                        }
                        let mut all = tallies.lock().unwrap();
                        let a = &mut all[si];
                        a.inputs += tally.inputs;
                        a.open_err += tally.open_err;
                        a.extract_err += tally.extract_err;
                        a.ok += tally.ok;
                        a.max_heap = a.max_heap.max(tally.max_heap);
                        a.max_excess = a.max_excess.max(tally.max_excess);
                    }
                })
                .unwrap();
        }
    });
    let elapsed = t0.elapsed();
    let tallies = tallies.into_inner().unwrap();
    let mut sum = Tally::default();
    let mut by_group: BTreeMap<String, Tally> = BTreeMap::new();
    for (seed, t) in seeds.iter().zip(&tallies) {
        let group = if seed.count >= 1000 || seed.in_place {
            seed.name.clone()
        } else {
            "small corpus files".to_string()
        };
        let g = by_group.entry(group).or_default();
        for (x, y) in [
            (&mut g.inputs, t.inputs),
            (&mut g.open_err, t.open_err),
            (&mut g.extract_err, t.extract_err),
            (&mut g.ok, t.ok),
        ] {
            *x += y;
        }
        g.max_heap = g.max_heap.max(t.max_heap);
        sum.inputs += t.inputs;
        sum.open_err += t.open_err;
        sum.extract_err += t.extract_err;
        sum.ok += t.ok;
        sum.max_heap = sum.max_heap.max(t.max_heap);
        sum.max_excess = sum.max_excess.max(t.max_excess);
    }
    println!(
        "{:<58} {:>7} {:>9} {:>11} {:>6} {:>10}",
        "seed", "inputs", "open err", "extract err", "ok", "peak heap"
    );
    for (name, t) in &by_group {
        println!(
            "{name:<58} {:>7} {:>9} {:>11} {:>6} {:>8.2}Mi",
            t.inputs,
            t.open_err,
            t.extract_err,
            t.ok,
            t.max_heap as f64 / (1 << 20) as f64
        );
    }
    println!(
        "largest peak heap of one input {:.2} MiB; largest (peak heap - 32 x input size) {:.2} MiB",
        sum.max_heap as f64 / (1 << 20) as f64,
        sum.max_excess as f64 / (1 << 20) as f64
    );
    let slowest = slowest.into_inner().unwrap();
    println!(
        "mutation test: {} inputs ({} open errors, {} extract errors, {} ok) in {elapsed:.1?} on {threads} threads; slowest input {:?} ({})",
        sum.inputs, sum.open_err, sum.extract_err, sum.ok, slowest.0, slowest.1
    );
    assert_eq!(sum.inputs, total);
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| (seeds.iter().position(|s| s.name == f.seed), f.index));
    if let Some(f) = failures.first() {
        panic!(
            "{} failing mutants; first: seed {} mutant {}: {}\n  mutations: {}\n  saved to {}",
            failed.into_inner(),
            f.seed,
            f.index,
            f.what,
            f.ops.join("; "),
            f.saved.display()
        );
    }
}

/// Writes an accepted mutant's tensors with both writers and reads them back.
fn write_back(path: &Path, bytes: Vec<u8>, dir: &Path, thread: usize) {
    let Ok(ck) = checkpoint::from_buffer(path, Arc::new(Buffer::Owned(bytes))) else {
        return;
    };
    let Ok(ex) = ck.extract(&Selection::default()) else {
        return;
    };
    let names: Vec<&str> = ex.store.entries().iter().map(|e| e.name.as_str()).collect();
    let st = dir.join(format!("wb-{thread}.safetensors"));
    let meta = safetensors_io::metadata(&ex.what, ex.config.as_ref(), None, &names);
    safetensors_io::write(&ex.store, meta, &st, &|_| {}, None).expect("write safetensors");
    let back = tiw_converters::open(&st).expect("reopen safetensors");
    assert_eq!(
        back.extract(&Selection::default()).expect("extract").store.len(),
        names.len()
    );
    let pt = dir.join(format!("wb-{thread}.pt"));
    pt_write::write(&ex.store, &pt, &|_| {}).expect("write .pt");
    let back = tiw_converters::open(&pt).expect("reopen .pt");
    assert_eq!(
        back.extract(&Selection::default()).expect("extract").store.len(),
        names.len()
    );
}

/// Re-derives mutant `index` of `seed` with a log of its mutations and saves it for
/// reproduction (under the system temp dir, which outlives the test's own temp dir).
fn describe_failure(seed: &Seed, donors: &[Vec<u8>], index: usize, what: String) -> Failure {
    let mut rng = Rng::new(fnv(&seed.name) ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut ops = Vec::new();
    let bytes = if seed.in_place {
        if rng.chance(16) {
            let at = seed.pick(&mut rng);
            ops.push(format!("truncate at {at}"));
            seed.bytes[..at].to_vec()
        } else {
            let mut b = seed.bytes.clone();
            for _ in 0..1 + rng.below(2) {
                let at = seed.pick(&mut rng);
                mutate_in_place(&mut b, at, &mut rng, Some(&mut ops));
            }
            b
        }
    } else {
        derive(seed, donors, &mut rng, Some(&mut ops))
    };
    let saved = std::env::temp_dir().join(format!(
        "tiw-hostile-{}-{index}.bin",
        seed.name.replace(['/', '.'], "_")
    ));
    let _ = std::fs::File::create(&saved).and_then(|mut f| f.write_all(&bytes));
    Failure {
        seed: seed.name.clone(),
        index,
        what,
        ops,
        saved,
    }
}

// ---------------------------------------------------------------------------------------
// 5. large dense pickles: memory stays linear in the input
// ---------------------------------------------------------------------------------------

/// Megabyte-sized streams of the opcodes that allocate the most per input byte keep the heap
/// linear in the input: the VM charges `24 × stream bytes + 16 MiB` of accounted cost (each
/// arena object at its real size); vectors grow by doubling and a MARK'ed run of items is
/// briefly held twice, so the heap stays within `48 × size + 64 MiB`. (Before objects were
/// charged their real size, 2 MiB of EMPTY_TUPLE opcodes took 256 MiB, 8 MiB took 512 MiB.)
/// Every corpus file, mutant and real fixture stays within `32 × size + 64 MiB` (above).
#[test]
fn dense_pickles_stay_linear() {
    let n = 3usize << 20;
    let rep = |prefix: &[u8], unit: &[u8], count: usize, suffix: &[u8]| -> Vec<u8> {
        let mut v = prefix.to_vec();
        for _ in 0..count {
            v.extend_from_slice(unit);
        }
        v.extend_from_slice(suffix);
        v
    };
    let mut nested = vec![0x80, 2];
    nested.extend(std::iter::repeat_n(b']', n / 2));
    nested.extend(std::iter::repeat_n(b'a', n / 2 - 1));
    nested.push(b'.');
    let patterns = [
        ("EMPTY_TUPLE x n", rep(&[0x80, 2], b")", n, b".")),
        ("nested EMPTY_LIST / APPEND", nested),
        ("TUPLE1 nesting", rep(&[0x80, 2, b'K', 1], b"\x85", n, b".")),
        ("MEMOIZE x n", rep(&[0x80, 4, b']'], b"\x94", n, b".")),
        (
            "MARK NONE x n APPENDS",
            rep(&[0x80, 2, b']', b'('], b"N", n, b"e."),
        ),
        (
            "list of n/2 small ints",
            rep(&[0x80, 2, b']', b'('], b"K\x01", n / 2, b"e."),
        ),
        (
            "EMPTY_DICT k v SETITEM",
            rep(&[0x80, 2, b'}'], b"KaKbs", n / 5, b"."),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in patterns {
        let len = bytes.len();
        let bound = 48 * len + HEAP_SLACK;
        let (r, heap) = peak_heap(|| {
            checkpoint::from_buffer(Path::new(name), Arc::new(Buffer::Owned(bytes))).map(|ck| ck.kind())
        });
        let outcome = match r {
            Ok(k) => format!("opened ({})", k.tag()),
            Err(e) => e.to_string().chars().take(90).collect(),
        };
        println!(
            "{name:<28} {len:>8} B  peak heap {:>6.1} MiB = {:>5.1} x input  {outcome}",
            heap as f64 / (1 << 20) as f64,
            heap as f64 / len as f64,
        );
        if heap > bound {
            failures.push(format!("{name}: peak heap {heap} > 48 x {len} + 64 MiB"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
