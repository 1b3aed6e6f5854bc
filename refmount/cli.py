"""Command line: ``refmount [OPTIONS] SOURCE [SOURCE...] MOUNTPOINT`` and subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import RefmountError
from .options import MountOptions, default_log_file, parse_size, parse_storage_options, split_sources
from .urls import location_of

USAGE = """refmount [OPTIONS] SOURCE [SOURCE...] MOUNTPOINT
       refmount umount MOUNTPOINT
       refmount inspect [--json] SOURCE
       refmount demo"""


def _mount_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="refmount",
        usage=USAGE,
        description="Mount kerchunk reference sets as a read-only directory tree (a Zarr store).",
        epilog="SOURCE is a reference file (path or URL), optionally NAME=SOURCE. One source is the "
        "mount's root; several appear as sub-directories named after them.",
    )
    p.add_argument("paths", nargs="+", metavar="SOURCE... MOUNTPOINT")
    p.add_argument("-f", "--foreground", action="store_true", help="stay attached (systemd, debugging)")
    p.add_argument("--cache-size", default=None, help="memory cache bound, e.g. 2GiB (default: 1/8 of the memory limit, at most 1 GiB)")
    p.add_argument(
        "--storage-option",
        "-o",
        action="append",
        default=[],
        metavar="PROTOCOL.KEY=VALUE",
        help="fsspec option for an origin protocol, e.g. s3.endpoint_url=http://127.0.0.1:9000 (repeatable)",
    )
    p.add_argument("--allow-other", action="store_true", help="let other users read the mount (needs user_allow_other)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before an origin request fails (default 30)")
    p.add_argument("--retries", type=int, default=3, help="attempts per origin request on transient errors (default 3)")
    p.add_argument("--parallel", type=int, default=16, help="origin requests in flight for fetching ahead (default 16)")
    p.add_argument("--no-prefetch", action="store_true", help="fetch only what is read (no prefetch across chunk files)")
    p.add_argument("--max-gap", default="64KiB", help="merge ranges of one original this close into one request (default 64KiB)")
    p.add_argument("--max-request", default="4MiB", help="largest merged request (default 4MiB)")
    p.add_argument("--attr-timeout", type=float, default=3600.0, help="seconds the kernel may cache names and attributes")
    p.add_argument("--log-file", help="log here (default in the background: $XDG_STATE_HOME/refmount/refmount.log)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return p


def _options(args: argparse.Namespace) -> MountOptions:
    if len(args.paths) < 2:
        raise RefmountError("need at least one SOURCE and a MOUNTPOINT")
    *sources, mountpoint = args.paths
    level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise RefmountError(f"invalid log level {args.log_level!r}")
    if args.timeout <= 0 or args.retries < 1 or args.parallel < 1:
        raise RefmountError("--timeout must be positive, --retries and --parallel at least 1")
    opts = MountOptions(
        sources=split_sources(sources),
        mountpoint=mountpoint,
        storage_options=parse_storage_options(args.storage_option),
        allow_other=args.allow_other,
        timeout=args.timeout,
        retries=args.retries,
        attr_timeout=args.attr_timeout,
        parallel=args.parallel,
        prefetch=not args.no_prefetch,
        max_gap=parse_size(args.max_gap),
        max_request=parse_size(args.max_request),
        log_file=os.path.abspath(args.log_file) if args.log_file else None,
        log_level=level.upper(),
    )
    if args.cache_size is not None:
        opts.cache_size = parse_size(args.cache_size)
    return opts


def to_args(opts: MountOptions) -> list[str]:
    """The command-line form of ``opts`` (to start a background daemon)."""
    args = ["--cache-size", str(opts.cache_size), "--timeout", str(opts.timeout), "--retries", str(opts.retries)]
    args += ["--attr-timeout", str(opts.attr_timeout), "--log-level", opts.log_level]
    args += ["--parallel", str(opts.parallel)] + ([] if opts.prefetch else ["--no-prefetch"])
    args += ["--max-gap", str(opts.max_gap), "--max-request", str(opts.max_request)]
    for protocol, values in opts.storage_options.items():
        for key, value in values.items():
            args += ["--storage-option", f"{protocol}.{key}={json.dumps(value)}"]
    if opts.allow_other:
        args.append("--allow-other")
    args += ["--log-file", os.path.abspath(opts.log_file or default_log_file())]
    sources = [location_of(src) for _, src in opts.sources]
    if len(sources) > 1:
        sources = [f"{name}={src}" for (name, _), src in zip(opts.sources, sources)]
    return [*args, "--", *sources, os.path.abspath(opts.mountpoint)]


def cmd_mount(argv: list[str]) -> int:
    args = _mount_parser().parse_intermixed_args(argv)
    opts = _options(args)
    if args.foreground:
        from .daemon import serve

        return serve(opts, args.ready_fd)
    from .daemon import spawn

    spawn(to_args(opts))
    return 0


def cmd_umount(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount umount", description="Unmount a refmount mount (lazily if busy or dead).")
    p.add_argument("mountpoint")
    args = p.parse_args(argv)
    from .mountpoint import unmount

    print(f"{args.mountpoint}: {unmount(args.mountpoint)}")
    return 0


def cmd_inspect(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount inspect", description="Summarise a reference set without mounting it.")
    p.add_argument("source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--storage-option", "-o", action="append", default=[], metavar="PROTOCOL.KEY=VALUE")
    args = p.parse_args(argv)
    from .sources import open_source
    from .summary import render, summarize

    summary = summarize(open_source(args.source, parse_storage_options(args.storage_option)))
    print(json.dumps(summary, indent=2) if args.json else render(summary, args.source))
    return 0


def cmd_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="refmount demo", description="Mount a generated NetCDF4 archive over loopback HTTP and read it with xarray.")
    p.add_argument("--keep", metavar="DIR", help="build the demo in DIR and keep it")
    args = p.parse_args(argv)
    try:
        import h5py  # noqa: F401
        import kerchunk  # noqa: F401
        import xarray  # noqa: F401
    except ImportError as exc:
        raise RefmountError(f"the demo needs {exc.name}: pip install 'refmount[demo]'") from None
    from .demo import run

    return run(args.keep)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"umount": cmd_umount, "inspect": cmd_inspect, "demo": cmd_demo}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return cmd_mount(argv)
    except RefmountError as exc:
        print(f"refmount: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
