//! `copyimage-canceller`: a Kubernetes operator that cancels Alibaba Cloud ECS
//! cross-region image copies.
//!
//! The data path, left to right:
//!
//! ```text
//! CopyImageCancellation ──watch──▶ controller (shell) ──▶ decide (pure)
//!        ▲                             │                      │
//!        │ status (server-side apply)  │ credentials          │ next action
//!        └─────────────────────────────┤ (Secret / env)       ▼
//!                                      └──▶ ecs::client ──signed (ecs::signature)──▶ ECS CancelCopyImage
//! ```
//!
//! `ecs` knows nothing of Kubernetes, `resource` knows nothing of HTTP, and
//! `controller::decide` does no I/O and reads no clock.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cancel;
pub mod controller;
pub mod credentials;
pub mod demo;
pub mod ecs;
pub mod identity;
pub mod metrics;
pub mod pacing;
pub mod resource;
pub mod retry;
pub mod role_selector;
#[cfg(test)]
mod test_support;
