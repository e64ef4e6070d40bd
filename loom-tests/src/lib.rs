//! Loom models of the engine's concurrent hand-offs live in `tests/`; they run only
//! with `RUSTFLAGS="--cfg loom"` (see `scripts/loom.sh`). Models land with issue #4.
