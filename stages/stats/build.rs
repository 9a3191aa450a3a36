//! The crate versions this kind's code uses, for its cache key (see `pipeline-build`).
fn main() {
    pipeline_build::emit_locked_dependencies();
}
