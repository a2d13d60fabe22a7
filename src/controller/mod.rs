//! The controller: a pure decision core and the kube-runtime shell around it.

pub mod decide;
