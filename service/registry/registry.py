"""The registry of loaded models: the ModelManager loads, swaps and unloads versions (served.py) following the
repository on disk (control modes none, poll, explicit).

Everything that touches the disk (scans, fingerprints, configs, session creation, warm-up) runs in a worker thread,
never on the event loop. A version is swapped in only once warm, and the version it replaces keeps its accepted
requests and is drained afterwards, so a swap never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnserve.contracts import variants
from cnnserve.service.errors import ModelLoadError, ModelNotFound, ModelNotReady, ServiceError
from cnnserve.service.execution.runtime import Runtime
from cnnserve.service.registry import warmup
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import ModelConfig, read_config
from cnnserve.service.registry.repository import (
    NAME_PATTERN,
    VERSION_PATTERN,
    VERSION_RULE,
    Fingerprint,
    Repository,
    select_versions,
)
from cnnserve.service.registry.served import ServedModel, VersionObserver
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec, ModelState

logger = logging.getLogger(__name__)


ObserverFactory = Callable[[str, int], VersionObserver]  # (name, version) -> the observer of that loaded version
KindFactory = Callable[[ModelSpec, Path], object]
"""(merged spec, config path) -> the model's kind, built in the loading thread; ModelLoadError fails the version."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str  # "" for a row about the whole model (its config failed, or it is not loaded)
    state: ModelState
    reason: str = ""


@dataclass
class _Version:
    state: ModelState
    reason: str = ""
    served: ServedModel | None = None  # set while READY; a failed reload keeps the previous one here


@dataclass
class _Model:
    versions: dict[int, _Version] = field(default_factory=dict)
    error: str = ""  # a failure of the whole model (config.json, no versions)
    fingerprint: Fingerprint | None = None  # what the last sync saw on disk
    overridden: bool = False  # versions were last loaded with a load request's config: the next load reloads all
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        *,
        on_model_event: Callable[[ServedModel, bool], None] | None = None,
        observer_factory: ObserverFactory | None = None,
        kind_factory: KindFactory | None = None,
    ) -> None:
        self.settings = settings
        self.repository = Repository(settings.model_repository)
        self.on_model_event = on_model_event
        self.observer_factory = observer_factory  # may also be set after construction, before start()
        self.kind_factory = kind_factory
        self._models: dict[str, _Model] = {}
        self._wanted: set[str] = set()  # models meant to be loaded: readiness waits for each
        self._started = self._stopping = False
        self._poll_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """none: load every model; poll: the same, then rescan every poll_interval_s; explicit: startup_models."""
        mode = self.settings.model_control_mode
        for name in await asyncio.to_thread(self.repository.model_names):
            self._models.setdefault(name, _Model())
        if mode == "explicit":
            for name in self.settings.startup_models:
                self._wanted.add(name)  # readiness waits for it even when it cannot load
                try:
                    await self.load(name)
                except ModelNotFound as err:
                    logger.error("event=startup_model_missing model=%s error=%s", name, err)
                    if NAME_PATTERN.fullmatch(name):
                        self._models.setdefault(name, _Model(error=str(err)))
                except ServiceError:
                    pass  # recorded for index(); the others still load
        else:
            await self.refresh()
        self._started = True
        if mode == "poll":
            self._poll_task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self, *, drain: bool = True) -> None:
        """Stop polling; close every loaded version, draining (or failing) its queued requests."""
        self._stopping = True
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        closing = []
        for model in list(self._models.values()):
            async with model.lock:  # a load under way finishes first (and is then dropped)
                for entry in model.versions.values():
                    if entry.served is not None:
                        closing.append(entry.served)
                    entry.served, entry.state, entry.reason = None, ModelState.UNAVAILABLE, "server stopped"
        await asyncio.gather(*(self._close(served, drain=drain) for served in closing))

    async def refresh(self) -> None:
        """Follow the disk once: new models and versions load, changed ones reload, removed ones unload."""
        on_disk = await asyncio.to_thread(self.repository.model_names)
        for name in sorted(set(self._models) - set(on_disk)):
            self._wanted.discard(name)
            await self._sync(name, force=False, quiet=True)
        for name in on_disk:
            self._wanted.add(name)
            await self._sync(name, force=False, quiet=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.refresh()
            except Exception:  # a scan that trips over a half-written folder retries next time
                logger.exception("event=poll_failed")

    # -- explicit control ---------------------------------------------------------------------------------------

    async def load(self, name: str, config: str | None = None) -> None:
        """(Re)load a model from disk: new, changed or failed versions load; others keep serving.

        `config`: a config.json document (JSON text) to load with instead of the folder's config.json, as Triton's
        load `config` parameter; every selected version reloads with it. It is kept nowhere: it lasts until the next
        load, and a load without one reloads every version with the folder's config again (as Triton does)."""
        try:
            await asyncio.to_thread(self.repository.model_dir, name)
        except ModelNotFound as err:  # an unsafe or unknown name, in Triton's words, which its clients look for
            raise ModelNotFound(f"failed to load {name!r}, failed to poll from model repository: {err}") from None
        self._wanted.add(name)
        await self._sync(name, force=True, quiet=False, override=config)

    async def unload(self, name: str) -> None:
        """Stop serving every version of a model: new requests are refused, accepted ones finish."""
        model = self._models.get(name)
        if model is None:
            await asyncio.to_thread(self.repository.model_dir, name)
            return
        self._wanted.discard(name)
        async with model.lock:
            await self._retire(name, model, list(model.versions), reason="unloaded")
            model.fingerprint, model.overridden = None, False

    # -- lookups (event loop, no I/O; index scans in a thread) -----------------------------------------------------

    def get(self, name: str, version: str = "") -> ServedModel:
        """A ready version ("" = the newest ready one). ModelNotFound: unknown name or version; ModelNotReady:
        known but not loaded, loading or failed."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(unknown_model(name, "is not found"))
        if version == "":  # every request that names no version: a plain loop, no list, no key function
            newest: ServedModel | None = None
            for candidate in model.versions.values():
                served = candidate.served
                if served is not None and (newest is None or served.version > newest.version):
                    newest = served
            if newest is None:
                reason = model.error or "; ".join(e.reason for e in model.versions.values() if e.reason)
                raise ModelNotReady(unknown_model(name, "has no available versions", reason))
            return newest
        if not VERSION_PATTERN.fullmatch(version):
            raise ModelNotFound(
                f"failed to get model version from specified version string '{version}', version should be an "
                f"integral value > 0 ({VERSION_RULE})"
            )
        entry = model.versions.get(int(version))
        if entry is None:
            raise ModelNotFound(unknown_model(name, f"version {version} is not found"))
        if entry.served is None:
            raise ModelNotReady(unknown_model(name, f"version {version} is not at ready state", entry.reason))
        return entry.served

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except ServiceError:
            return False
        return True

    def all_ready(self) -> bool:
        """Every model meant to be loaded serves at least one warm version."""
        if not self._started or self._stopping:
            return False
        return all(
            name in self._models and any(e.served is not None for e in self._models[name].versions.values())
            for name in self._wanted
        )

    def tracked_names(self) -> list[str]:
        """Models this registry knows: found on disk at the last scan, or loaded; no disk access."""
        return sorted(self._models)

    def served_models(self) -> list[ServedModel]:
        return [
            entry.served
            for _, model in sorted(self._models.items())
            for _, entry in sorted(model.versions.items())
            if entry.served is not None
        ]

    async def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every model on disk or loaded, one row per tracked version, failures with their reason."""
        rows: list[IndexEntry] = []
        on_disk = await asyncio.to_thread(self.repository.model_names)
        for name in sorted(set(self._models) | set(on_disk)):
            model = self._models.get(name) or _Model()
            own = [IndexEntry(name, "", ModelState.UNAVAILABLE, model.error)] if model.error else []
            own += [IndexEntry(name, str(v), e.state, e.reason) for v, e in sorted(model.versions.items())]
            rows += own or [IndexEntry(name, "", ModelState.UNAVAILABLE, "not loaded")]
        return [r for r in rows if r.state == ModelState.READY] if ready_only else rows

    # -- syncing one model with the disk --------------------------------------------------------------------------

    async def _sync(self, name: str, *, force: bool, quiet: bool, override: str | None = None) -> None:
        """Load new or changed versions the policy selects, swap each in once warm, then retire the rest.
        `quiet`: failures are only recorded (poll, start); otherwise the first is raised (explicit load).
        `override`: a load request's config, read instead of config.json (load)."""
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            if self._stopping:
                return
            try:
                fingerprint = await asyncio.to_thread(self.repository.fingerprint, name)
            except ModelNotFound:  # the folder is gone: unload it all
                await self._retire(name, model, list(model.versions), reason="removed from the repository")
                if self._models.get(name) is model and not model.versions:
                    del self._models[name]
                return
            if not force and fingerprint == model.fingerprint:
                return
            previous, model.fingerprint = model.fingerprint, fingerprint
            try:
                config = await asyncio.to_thread(self._read_config, name, override)
                available = [v for v, _, _ in fingerprint.versions]
                wanted = select_versions(available, config.spec.version_policy)
                if not wanted:
                    found = ", ".join(map(str, available)) or "none"
                    raise ModelLoadError(
                        f"model '{name}': no version to serve (versions with a model.onnx: {found}; "
                        f"policy {config.spec.version_policy})"
                    )
            except ModelLoadError as err:
                logger.error("event=model_config_failed model=%s error=%s", name, err)
                public = self._public(err)
                if override is not None:  # a refused request: the model stays as it was
                    model.fingerprint = previous
                    raise public from None
                model.error = str(public)
                await self._retire(name, model, [v for v in model.versions if v not in _versions(fingerprint)])
                if not quiet:
                    raise public from None
                return
            model.error = ""
            # A config from the request, or the folder's after one: every version reloads with it.
            config_changed = override is not None or model.overridden
            files_changed = config_changed or previous is None or previous.files != fingerprint.files
            errors: list[ServiceError] = []
            for version in wanted:
                entry = model.versions.get(version)
                changed = (
                    files_changed
                    or previous is None
                    or (previous.version_stamp(version) != fingerprint.version_stamp(version))
                )
                if entry is None or entry.served is None or changed:
                    error = await self._load_version(model, config, version)
                    if error is not None:
                        errors.append(error)
            # Versions the policy no longer selects go once a selected one serves; removed versions go anyway.
            wanted_ready = any(model.versions[v].served is not None for v in wanted if v in model.versions)
            on_disk = _versions(fingerprint)
            await self._retire(
                name, model, [v for v in model.versions if v not in wanted and (wanted_ready or v not in on_disk)]
            )
            # Versions that failed to reload with the folder's config still serve the request's: reload them next time.
            model.overridden = override is not None or (model.overridden and bool(errors))
            if errors and not quiet:
                raise errors[0]

    async def _load_version(self, model: _Model, config: ModelConfig, version: int) -> ServiceError | None:
        name = config.name
        entry = model.versions.setdefault(version, _Version(ModelState.LOADING))
        if entry.served is None:
            entry.state, entry.reason = ModelState.LOADING, ""
        started = time.monotonic()
        try:
            runtime, spec, kind = await asyncio.to_thread(self._build, config, version)
        except Exception as err:
            failure = err if isinstance(err, ServiceError) else ModelLoadError(f"{type(err).__name__}: {err}")
            logger.error("event=model_load_failed model=%s version=%d error=%s", name, version, failure)
            failure = self._public(failure)
            if entry.served is None:
                entry.state, entry.reason = ModelState.UNAVAILABLE, str(failure)
            else:
                entry.reason = f"reload failed, the previous load keeps serving: {failure}"
            return failure
        if self._stopping:
            await asyncio.to_thread(runtime.close)
            return None
        observer = self.observer_factory(name, version) if self.observer_factory else None
        served = ServedModel(spec, version, runtime, observer, kind)
        old, entry.served, entry.state, entry.reason = entry.served, served, ModelState.READY, ""
        logger.info("event=model_loaded model=%s version=%d provider=%s instances=%d seconds=%.3f", name, version,
                    served.provider, runtime.instance_count, time.monotonic() - started)  # fmt: skip
        self._emit(served, True)
        if old is not None:
            await self._close(old, drain=True)
        return None

    def _public(self, err: ServiceError) -> ServiceError:
        """The error as clients see it (index reasons, load replies): paths inside the repository relative to it,
        so no server path leaves the server; the log keeps the whole text."""
        root = str(self.repository.root)
        text = str(err)
        public = text.replace(root + os.sep, "").replace(root, "the repository")
        return err if public == text else type(err)(public)

    def _read_config(self, name: str, override: str | None = None) -> ModelConfig:
        """Runs in a worker thread: resolving the folder and reading config.json both touch the disk (and a load
        request's config, which may be large, is parsed off the event loop)."""
        return read_config(
            self.repository.model_dir(name), allowed_providers=self.settings.execution_providers, override=override
        )

    def _build(self, config: ModelConfig, version: int) -> tuple[Runtime, ModelSpec, object]:
        """Sessions, the merged spec, its kind, warm-up. Runs in a worker thread."""
        spec = config.spec
        runtime = Runtime(
            self.repository.model_path(config.name, version),
            providers=spec.execution_providers,
            options=spec.session,
            instance_count=spec.instance_count,
            label=f"{config.name}:{version}",
            required_provider=spec.parameters.get(variants.REQUIRES_PROVIDER),
        )
        try:
            merged = resolve(config, runtime.inputs, runtime.outputs, version=version)
            kind = self.kind_factory(merged, config.path) if self.kind_factory is not None else None
            runtime.warm_up(merged, warmup.feeds(merged, config.path.parent))
        except BaseException:
            runtime.close()
            raise
        return runtime, merged, kind

    async def _retire(self, name: str, model: _Model, versions: list[int], reason: str = "") -> None:
        """Take versions out of the registry at once, then drain and release them. Rows of versions that were
        unloaded on request stay (UNAVAILABLE, reason); others disappear from the index."""
        closing = []
        for version in versions:
            entry = model.versions.get(version)
            if entry is None:
                continue
            if entry.served is not None:
                closing.append(entry.served)
                entry.served, entry.state = None, ModelState.UNLOADING
            if reason == "unloaded":
                entry.state, entry.reason = ModelState.UNAVAILABLE, reason
            else:
                del model.versions[version]
        for served in closing:
            logger.info("event=model_unloading model=%s version=%d reason=%s", name, served.version,
                        reason or "not selected")  # fmt: skip
        await asyncio.gather(*(self._close(served, drain=True) for served in closing))

    async def _close(self, served: ServedModel, *, drain: bool) -> None:
        try:
            await served.close(drain=drain)
        except Exception:
            logger.exception("event=model_close_failed model=%s version=%d", served.name, served.version)
        self._emit(served, False)

    def _emit(self, served: ServedModel, loaded: bool) -> None:
        if self.on_model_event is None:
            return
        try:
            self.on_model_event(served, loaded)
        except Exception:
            logger.exception("event=model_event_failed model=%s version=%d", served.name, served.version)


def unknown_model(name: str, what: str, reason: str = "") -> str:
    """Triton's words for a model or version that cannot serve (core src/model_repository_manager), which clients
    match ("Request for unknown model"); the reason, when there is one, follows them."""
    return f"Request for unknown model: {name!r} {what}" + (f" ({reason})" if reason else "")


def _versions(fingerprint: Fingerprint) -> set[int]:
    return {v for v, _, _ in fingerprint.versions}
