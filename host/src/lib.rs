//! Weir: a self-hosted API gateway whose custom logic runs as WebAssembly components.

pub mod config;
pub mod path;
pub mod router;
