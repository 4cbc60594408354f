//! Generated client code for the etcd v3 API subset in `tests/proto/etcdserverpb` (KV.Put and
//! Maintenance.Status), built by `tests/build.rs`. No logic lives here.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("etcdserverpb");
