//! Running and operating Mimiry outside AWS: the template reader, the bootstrap of emulated
//! resources, and the local server (HTTP routes, SQS event-source mapping, reconciler timer).

pub mod bootstrap;
pub mod local;
pub mod template;
