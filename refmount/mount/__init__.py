"""The FUSE mount: operations over an index, the daemon, reload, mountpoints, systemd notify.
Knows nothing of reference formats."""
