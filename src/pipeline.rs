//! Stage measurements and the stage table of a compress-then-deploy run.
