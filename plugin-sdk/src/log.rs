//! Writing to the gateway's log. Lines carry the plugin's name and the request id; lines
//! under the gateway's log level are dropped, long ones are cut. (A plugin's stdout and
//! stderr are discarded: `println!` shows nowhere.)

pub use crate::bindings::weir::plugin::log::Level;

/// Writes one line at `level`.
pub fn write(level: Level, message: &str) {
    crate::host::log_write(level, message);
}

/// Writes one `trace` line.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Writes one `debug` line.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes one `info` line.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes one `warn` line.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes one `error` line.
pub fn error(message: &str) {
    write(Level::Error, message);
}
