//! One module per message the oauth-worker answers.

pub mod connect_requested;
pub mod disconnect_requested;
