//! Shared fixtures of the multi-process tests and benchmarks.
