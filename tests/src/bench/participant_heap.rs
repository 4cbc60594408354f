//! The heap of the bench process, which hosts every participant of a federated run. On their
//! own machines each participant would have a heap of its own, whose glibc thresholds rise to
//! the size of its model-sized vectors after their first free, so that their memory is reused
//! round after round. Fifty participants sharing one process spread those vectors over many
//! arenas, and glibc keeps giving the freed ones back to the system (unmapping or trimming
//! them), so every round faults them in again, page by page: a cost of hosting them together
//! that a participant of its own does not pay. [`keep_freed_memory`] sets the thresholds once
//! so that freed memory stays in the process.

/// Largest allocation served from the heap rather than mapped on its own: glibc's ceiling on
/// 64-bit machines (on others glibc refuses it, and says so below).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAP_ON_ITS_OWN_ABOVE: libc::c_int = 32 << 20;

/// Keeps freed memory in this process (glibc only; a no-op elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two of glibc's allocation thresholds and takes no pointers.
        let set = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_ON_ITS_OWN_ABOVE)
                & libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX)
        };
        if set != 1 {
            eprintln!("warning: glibc refused the participants' heap thresholds");
        }
    }
}
