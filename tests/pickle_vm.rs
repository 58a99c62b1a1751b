//! The pickle VM on streams written by CPython's own pickler at every protocol (0–5), and on
//! torch.save zip variants (other archive folder, no 64-byte alignment, a junk prefix).

mod common;

use std::process::Command;
use std::sync::Arc;

use common::fixture;
use tiw_converters::edm_pkl::to_json;
use tiw_converters::pickle::{globals::Trace, run_vm, Arena, Bytes, Obj};
use tiw_converters::{Buffer, Json, Selection};

/// Our JSON view of a decoded value, with bytes shown as `<bytes[n]>` like the generator.
fn view(arena: &Arena, j: Json, v: tiw_converters::pickle::Value) -> Json {
    if let Some(Obj::Bytes(b)) = arena.obj(v) {
        let n = match b {
            Bytes::Span { len, .. } => *len,
            Bytes::Owned(o) => o.len(),
        };
        return Json::Str(format!("<bytes[{n}]>"));
    }
    j
}

#[test]
fn cpython_pickles_of_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("python3")
        .arg(fixture("../py/make_protocol_pickles.py"))
        .arg(dir.path())
        .status()
        .expect("python3");
    assert!(st.success());
    let expected = Json::parse(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
    for proto in 0..=5 {
        let buf = std::fs::read(dir.path().join(format!("proto{proto}.pkl"))).unwrap();
        let mut arena = Arena::default();
        let mut trace = Trace::default();
        let out = run_vm(&buf, 0, buf.len(), "test", &mut arena, None, &mut trace)
            .unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(out.end, buf.len());
        let Json::Object(fields) = to_json(&arena, out.value) else {
            panic!("protocol {proto}: not a dict")
        };
        for (k, got) in fields {
            let v = arena.dict_get(out.value, &k).unwrap();
            let got = view(&arena, got, v);
            let want = expected.get(&k).unwrap();
            assert_eq!(&got, want, "protocol {proto}, key {k}");
        }
        assert!(trace.dangerous().is_empty());
        println!(
            "protocol {proto}: {} bytes, {} opcodes, decoded equal",
            buf.len(),
            trace.opcodes
        );
    }
}

/// Rewrites `classifier/discriminator.pt` with Python's zipfile: folder `archive/`, no
/// alignment padding, and `prefix_junk` bytes before the archive.
fn rewrite_zip(dst: &std::path::Path, prefix_junk: usize) {
    let script = r#"
import sys, zipfile
src, dst, junk = sys.argv[1], sys.argv[2], int(sys.argv[3])
zin = zipfile.ZipFile(src)
with open(dst, "wb") as f:
    f.write(b"J" * junk)
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            rest = name.split("/", 1)[1]
            if rest in ("byteorder", ".format_version", ".storage_alignment", ".data/serialization_id"):
                continue  # torch 1.x wrote none of these
            zout.writestr("archive/" + rest, zin.read(name))
"#;
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(fixture("classifier/discriminator.pt"))
        .arg(dst)
        .arg(prefix_junk.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn torch_zip_variants_read_identically() {
    let reference = tiw_converters::open(&fixture("classifier/discriminator.pt"))
        .unwrap()
        .extract(&Selection::default())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for junk in [0usize, 100] {
        let p = dir.path().join(format!("variant{junk}.pt"));
        rewrite_zip(&p, junk);
        let ck = tiw_converters::open(&p).unwrap_or_else(|e| panic!("junk {junk}: {e}"));
        assert_eq!(ck.zip.as_ref().unwrap().prefix, "archive");
        let ex = ck.extract(&Selection::default()).unwrap();
        assert_eq!(ex.store.len(), reference.store.len());
        for e in reference.store.entries() {
            let o = ex.store.get(&e.name).unwrap();
            assert!(ex.store.bytes(o) == reference.store.bytes(e), "{}", e.name);
        }
        println!(
            "zip variant (folder archive/, unaligned, {junk} junk bytes): {} tensors identical",
            ex.store.len()
        );
    }
}

#[test]
fn buffers_in_memory_work_like_files() {
    let path = fixture("classifier/discriminator_cond_legacy.pt");
    let from_file = tiw_converters::open(&path)
        .unwrap()
        .extract(&Selection::default())
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let ck = tiw_converters::checkpoint::from_buffer(
        std::path::Path::new("memory.pt"),
        Arc::new(Buffer::Owned(bytes)),
    )
    .unwrap();
    let in_memory = ck.extract(&Selection::default()).unwrap();
    assert_eq!(in_memory.store.len(), from_file.store.len());
    for e in from_file.store.entries() {
        assert!(in_memory.store.bytes(in_memory.store.get(&e.name).unwrap()) == from_file.store.bytes(e));
    }
}
