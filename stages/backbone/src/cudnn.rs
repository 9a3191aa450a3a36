//! libtorch's cuDNN switches that `tch` does not wrap. The model stages train on CUDA with
//! cuDNN's deterministic algorithms, so that the same seed gives the same weights run after run,
//! as it does on the CPU backends; without this cuDNN may pick algorithms that sum in a
//! different order on every run.

use std::ffi::c_void;

// `at::globalContext()` and three members of `at::Context`, by their Itanium-mangled names
// (exported by `libtorch_cpu.so`, which torch-sys links; checked in torch 2.11's). They are
// non-virtual member functions, which take `this` as their first argument: the C calling
// convention of these declarations.
unsafe extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context21setDeterministicCuDNNEb"]
    fn at_context_set_deterministic_cudnn(context: *mut c_void, deterministic: bool);
    #[link_name = "_ZNK2at7Context18deterministicCuDNNEv"]
    fn at_context_deterministic_cudnn(context: *const c_void) -> bool;
    #[link_name = "_ZN2at7Context17setBenchmarkCuDNNEb"]
    fn at_context_set_benchmark_cudnn(context: *mut c_void, benchmark: bool);
}

/// Makes libtorch's cuDNN calls deterministic (`torch.backends.cudnn.deterministic = True`) and
/// turns off its benchmark mode, which times candidate algorithms on the first call of each shape
/// and keeps the fastest, a choice that can differ between runs (`benchmark = False`, libtorch's
/// default, stated here so that nothing else can have changed it).
pub fn make_deterministic() {
    // SAFETY: `globalContext()` returns the process-wide context, alive for the whole process;
    // the setters store a flag that libtorch reads when it next picks a cuDNN algorithm.
    unsafe {
        let context = at_global_context();
        at_context_set_deterministic_cudnn(context, true);
        at_context_set_benchmark_cudnn(context, false);
    }
}

/// Whether libtorch will ask cuDNN for deterministic algorithms.
pub fn is_deterministic() -> bool {
    // SAFETY: as in `make_deterministic`; the getter only reads the flag.
    unsafe { at_context_deterministic_cudnn(at_global_context()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cudnn_switch_reaches_libtorch_and_reads_back() {
        // libtorch's default, which `torch.backends.cudnn.deterministic` reads as False.
        assert!(!is_deterministic());
        make_deterministic();
        assert!(is_deterministic());
    }
}
