//! CLI tests: detect (issue 7).
