//! What the prune task (`prune.rs`) works on, in a leaf file so that the maps (`local.rs`),
//! the limiter state holding them (`kind.rs`) and the task itself each depend on this file
//! and never on one another.

/// One map of local limit state.
pub(super) trait Prunable {
    /// Keys held now.
    fn len(&self) -> usize;
    /// Drops idle keys; with `shrink`, returns freed memory too.
    fn prune(&self, shrink: bool);
}

/// The owner of the local maps: the prune task reaches them through this, off the request
/// path, so it need not know the limiter's state type.
pub(super) trait LocalMaps {
    /// Every local map, always in the same order (the task keeps one schedule per map).
    fn local_maps(&self) -> Vec<&dyn Prunable>;
}
