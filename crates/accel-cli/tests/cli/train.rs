//! CLI tests: train (issue 7).
