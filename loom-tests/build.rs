// The engine's build script: `ARGUS_BUG=<name>` gives these tests the same
// `--cfg argus_bug="<name>"` as the engine, so a twin's test expects the bug.
include!("../engine/build.rs");
