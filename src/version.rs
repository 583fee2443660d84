//! Which build this is.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = env!("PALISADE_GIT_SHA");
pub const BUILD_ID: &str = env!("PALISADE_BUILD_ID");
