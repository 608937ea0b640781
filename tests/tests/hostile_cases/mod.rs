//! The cases of the hostile-input suite, one module per kind of abuse. Each function returns
//! its group's cases (or, for the groups whose set-up changes state on purpose, runs them);
//! `hostile_inputs.rs` runs them against its stack.

pub mod bodies;
pub mod callbacks;
pub mod headers;
pub mod limits;
pub mod paths;
pub mod service_tokens;
pub mod tokens;
pub mod webhook_targets;
