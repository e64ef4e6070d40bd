//! Shared helpers of Argus's benchmarks.
