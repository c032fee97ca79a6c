//! CLI tests: zoo (issue 7).
