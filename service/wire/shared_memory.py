"""Triton's system shared memory: the regions clients register (POSIX shared memory objects in /dev/shm, opened by
key) and each request's use of them, every offset and size checked against the region it names.

A region is [offset, offset + byte_size) of one object, as its client registered it. The server maps that range
and keeps the object's descriptor, so that right before every access it can read the object's size again (fstat):
an object shrunk since it was registered is refused instead of crashing the server with SIGBUS when it touches a
page past the new end. Inputs are copied out of the region as the request is decoded (one memcpy, charged to the
byte budget like any decoded input) rather than handed to ONNX Runtime as views, which it would read while the
request waits for its batch, long after the check; outputs are written right after a check. What remains of the
risk is a shrink inside that copy's microseconds, and only the server's own user can shrink an object it accepts
(open_object refuses other users' objects and objects others may write).

A request holds each region it names from its first check to its answer (RegionUse): unregistering takes the name
away at once, and the mapping is closed when the last request using it has been answered.

Runs on the event loop only, so the registry and the use counts need no lock.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
from collections.abc import Mapping
from typing import Any, NamedTuple

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.service.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotSupported,
    QueueFull,
    RegionNotFound,
)

logger = logging.getLogger(__name__)

SHM_DIRECTORY = "/dev/shm"
"""Where Linux keeps POSIX shared memory objects: shm_open("/name") is the file /dev/shm/name."""
MAX_REGIONS = 1024
"""Regions registered at once; each holds a file descriptor and a mapping."""
MAX_NAME_CHARS = 255  # NAME_MAX: the longest file name, and as long as a region's name may be
DISABLED = (
    "client shared memory is disabled: start the server with --allow-client-shm (CNNSERVE_ALLOW_CLIENT_SHM=true) "
    "to enable it"
)
REGION = wire.SHARED_MEMORY_REGION
OFFSET = wire.SHARED_MEMORY_OFFSET
BYTE_SIZE = wire.SHARED_MEMORY_BYTE_SIZE


class Region:
    """One registered region: the mapping of its range and the descriptor its object's size is read from."""

    __slots__ = ("_fd", "_map", "_start", "byte_size", "key", "name", "offset", "retired", "users")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int, mapping: mmap.mmap,
                 start: int) -> None:  # fmt: skip
        self.name = name
        self.key = key
        self.offset = offset
        """Where the region starts in its object (bytes)."""
        self.byte_size = byte_size
        self._fd = fd
        self._map = mapping
        self._start = start
        """Where the region starts in the mapping, which begins at the page below `offset`."""
        self.users = 0
        """Requests in progress that name this region."""
        self.retired = False
        """Unregistered while in use: closed when the last user is done."""

    def read(self, offset: int, size: int, what: str) -> bytes:
        """A copy of [offset, offset + size) of the region (the caller checked the range against byte_size)."""
        self._check_object(offset + size, what)
        start = self._start + offset
        return self._map[start : start + size]

    def write(self, offset: int, data: memoryview, what: str) -> None:
        self._check_object(offset + len(data), what)
        start = self._start + offset
        self._map[start : start + len(data)] = data

    def _check_object(self, end: int, what: str) -> None:
        """The object still holds the region up to `end`: touching a page past its end would raise SIGBUS."""
        size = os.fstat(self._fd).st_size
        if size < self.offset + end:
            raise FailedPrecondition(
                f"{what}: the shared memory object of region {self.name!r} (key {self.key!r}) has shrunk to {size} "
                f"bytes since it was registered, and {self.offset + end} are needed; unregister the region and "
                "register it again"
            )

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view of it is still alive somewhere: the mapping goes with the last reference
            logger.warning("event=shm_unmap_deferred region=%s", self.name)
        os.close(self._fd)


class TensorRef(NamedTuple):
    """Where one tensor of a request lies: a range of a registered region."""

    region: Region
    offset: int
    byte_size: int


class Placement(NamedTuple):
    """Where an output was written, as the reply states it (the shared-memory parameters, in the client's terms)."""

    region: str
    offset: int
    byte_size: int
    """The bytes written, which for BYTES outputs the client cannot know in advance."""


class RegionUse:
    """The regions one request names, held from the first check to its answer (release)."""

    __slots__ = ("_held", "inputs", "outputs")

    def __init__(self, inputs: dict[int, TensorRef], outputs: dict[str, TensorRef]) -> None:
        self.inputs = inputs
        """By the input's position in the request."""
        self.outputs = outputs
        """By the requested output's name."""
        self._held = {ref.region for ref in (*inputs.values(), *outputs.values())}
        for region in self._held:
            region.users += 1

    def read(self, ref: TensorRef, what: str) -> bytes:
        return ref.region.read(ref.offset, ref.byte_size, what)

    def write(self, ref: TensorRef, data: memoryview, what: str) -> Placement:
        """`data` into the tensor's range; InvalidInput naming both sizes when it does not fit."""
        if len(data) > ref.byte_size:
            raise InvalidInput(
                f"{what}: the output takes {len(data)} bytes, more than its shared_memory_byte_size {ref.byte_size} "
                f"(region {ref.region.name!r})"
            )
        ref.region.write(ref.offset, data, what)
        return Placement(ref.region.name, ref.offset, len(data))

    def release(self) -> None:
        """Once the request is answered; a second call does nothing."""
        for region in self._held:
            region.users -= 1
            if region.retired and region.users == 0:
                region.close()
        self._held = set()


class SharedMemoryRegions:
    """Every registered region, by name; off (each operation answers DISABLED) unless settings.allow_client_shm."""

    def __init__(self, enabled: bool, directory: str = SHM_DIRECTORY) -> None:
        self.enabled = enabled
        self._directory = directory
        self._regions: dict[str, Region] = {}

    def require_enabled(self) -> None:
        if not self.enabled:
            raise NotSupported(DISABLED)

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Maps [offset, offset + byte_size) of the object `key` names; InvalidInput naming what does not fit."""
        self.require_enabled()
        what = f"cannot register shared memory region {name!r}"
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"a shared memory region needs a name of 1 to {MAX_NAME_CHARS} characters")
        if name in self._regions:
            raise AlreadyExists(f"shared memory region {name!r} already in manager; unregister it first")
        leaf = object_name(key, what)
        if offset < 0 or byte_size <= 0:
            raise InvalidInput(f"{what}: offset must be >= 0 and byte_size > 0, got {offset} and {byte_size}")
        if len(self._regions) >= MAX_REGIONS:
            raise QueueFull(f"{what}: {MAX_REGIONS} regions are registered, this server's most; unregister some")
        fd, size = open_object(os.path.join(self._directory, leaf), key, what)
        try:
            if offset + byte_size > size:
                raise InvalidInput(
                    f"{what}: offset {offset} + byte_size {byte_size} runs past the end of key {key!r} ({size} bytes)"
                )
            start = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap's offset must be page-aligned
            try:
                mapping = mmap.mmap(fd, offset + byte_size - start, flags=mmap.MAP_SHARED,
                                    prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)  # fmt: skip
            except OSError as err:
                raise InvalidInput(f"{what}: key {key!r} cannot be mapped: {err.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = Region(name, key, offset, byte_size, fd, mapping, offset - start)
        logger.info("event=shm_registered region=%s key=%s offset=%d byte_size=%d", name, key, offset, byte_size)

    def unregister(self, name: str) -> None:
        """The region `name`, or every region for ""; a name that is not registered is no error (Triton's rule)."""
        self.require_enabled()
        for each in [name] if name else list(self._regions):
            self._retire(each)

    def status(self, name: str) -> list[Region]:
        """The region `name` (RegionNotFound when it is not registered), or every region for "", by name."""
        self.require_enabled()
        if not name:
            return sorted(self._regions.values(), key=lambda region: region.name)
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find system shared memory region: {name!r}")
        return [region]

    def close(self) -> None:
        """At shutdown: every region unregistered (mappings still in use close with their last request)."""
        for name in list(self._regions):
            self._retire(name)

    def _retire(self, name: str) -> None:
        region = self._regions.pop(name, None)
        if region is None:
            return
        logger.info("event=shm_unregistered region=%s in_use=%d", name, region.users)
        if region.users:
            region.retired = True
        else:
            region.close()

    # -- a request ------------------------------------------------------------------------------------------------

    def use(self, request: pb.ModelInferRequest) -> RegionUse | None:
        """The regions the request's tensors name, each range checked against its region and held until release();
        None, at the cost of a look at each tensor's parameters, when it names none."""
        inputs: dict[int, TensorRef] = {}
        for index, tensor in enumerate(request.inputs):
            if tensor.parameters:
                ref = self._reference(tensor.parameters, f"input {tensor.name!r}")
                if ref is not None:
                    inputs[index] = ref
        outputs: dict[str, TensorRef] = {}
        for output in request.outputs:
            if output.parameters:
                ref = self._reference(output.parameters, f"output {output.name!r}")
                if ref is not None:
                    if wire.CLASSIFICATION_PARAMETER in output.parameters:
                        raise InvalidInput(
                            f"output {output.name!r}: a classification output cannot be written to shared memory; "
                            "drop one of 'classification' and 'shared_memory_region'"
                        )
                    outputs[output.name] = ref
        if not inputs and not outputs:
            return None
        return RegionUse(inputs, outputs)

    def _reference(self, parameters: Mapping[str, pb.InferParameter], what: str) -> TensorRef | None:
        if REGION not in parameters:  # `in` first: indexing a protobuf map inserts the key
            for key in (OFFSET, BYTE_SIZE):
                if key in parameters:
                    raise InvalidInput(f"{what}: parameter {key!r} needs {REGION!r} beside it")
            return None
        self.require_enabled()
        name = _parameter(parameters, REGION, str, what)
        offset = _parameter(parameters, OFFSET, int, what) if OFFSET in parameters else 0
        if BYTE_SIZE not in parameters:
            raise InvalidInput(f"{what}: parameter {BYTE_SIZE!r} must be given with {REGION!r}")
        size = _parameter(parameters, BYTE_SIZE, int, what)
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"{what}: Unable to find shared memory region: {name!r}; register it first")
        if offset < 0 or size < 0:
            raise InvalidInput(f"{what}: {OFFSET} and {BYTE_SIZE} must be >= 0, got {offset} and {size}")
        if offset + size > region.byte_size:
            raise InvalidInput(
                f"{what}: {OFFSET} {offset} + {BYTE_SIZE} {size} runs past the end of shared memory region {name!r} "
                f"({region.byte_size} bytes)"
            )
        return TensorRef(region, offset, size)


def _parameter(parameters: Mapping[str, pb.InferParameter], key: str, kind: type[Any], what: str) -> Any:
    """A string (string_param) or an integer (int64_param or uint64_param) parameter; InvalidInput otherwise."""
    parameter = parameters[key]
    choice = parameter.WhichOneof("parameter_choice")
    wanted = ("string_param",) if kind is str else ("int64_param", "uint64_param")
    if choice is None or choice not in wanted:
        expected = "a string" if kind is str else "an integer"
        raise InvalidInput(f"{what}: parameter {key!r} must be {expected}")
    return getattr(parameter, choice)


def object_name(key: str, what: str) -> str:
    """The file in /dev/shm that `key` names, read as shm_open reads it: leading '/'s dropped, then one name."""
    leaf = key.lstrip("/")
    if not leaf or leaf in (".", "..") or "/" in leaf or "\0" in leaf or len(leaf) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"{what}: key {key!r} is not a shared memory object's name as shm_open takes it: '/name', with no "
            "further '/', not '.' or '..'"
        )
    return leaf


def open_object(path: str, key: str, what: str) -> tuple[int, int]:
    """(descriptor, size) of the object at `path`, opened for reading and writing. Refused: a symbolic link (it could
    point anywhere), anything but a regular file (a FIFO or device could block or act on being opened), an object
    of another user (a client must not reach, through the server, memory that user shares with others), and one
    that users other than its owner may write (they could shrink it under the server). Messages name the key,
    never the server's path."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        reasons = {
            errno.ENOENT: "no shared memory object has this key; create it (shm_open) before registering it",
            errno.ELOOP: "it is a symbolic link; register the shared memory object itself",
            errno.EISDIR: "it is a directory",
            errno.EACCES: "the server may not open it for reading and writing",
            errno.EPERM: "the server may not open it for reading and writing",
        }
        reason = reasons.get(err.errno or 0, err.strerror or "it cannot be opened")
        raise InvalidInput(f"{what}: key {key!r}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{what}: key {key!r} is not a shared memory object (a device, pipe or socket)")
        if info.st_uid != os.geteuid():
            raise InvalidInput(
                f"{what}: key {key!r} belongs to another user; this server maps only shared memory objects of the user "
                "it runs as, so run the client as that user"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InvalidInput(
                f"{what}: key {key!r} may be written by users other than its owner (mode {info.st_mode & 0o777:o}); "
                "create it with mode 600, as tritonclient and perf_analyzer do"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size
