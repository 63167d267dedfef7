//! The local server: every route of template.yaml served from the functions' own handlers on
//! 127.0.0.1, the worker fed by a local SQS event-source mapping, and the reconciler on a timer.

pub mod event_source;
pub mod functions;
pub mod server;
