//! One file per event the mailer-worker handles.

pub mod auth_link_issued;
