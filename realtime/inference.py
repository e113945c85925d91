"""ONNX Runtime sessions and the generator runner.

`create_session` picks an execution provider (auto: CUDA, then CoreML, then
DirectML, then the CPU) without letting a missing GPU library spray errors over
the terminal, and sizes the thread pool so the audio thread keeps a core.
Before CUDA is tried it preloads the CUDA and cuDNN libraries that the `gpu`
extra installs as pip wheels (`pip install 'ganstream[gpu]'`), which the
system's loader would not find on its own.
`Generator` runs a bundle's generator graph: latents (B, D) -> audio (B, segment).
A spectral bundle's generator outputs spectrograms: the Generator runs its fused
latent -> audio graph when the bundle has one, else the generator and then the
reconstruction network, so every host sees audio either way. A spectral bundle
without a network (`spectral.reconstruction`, format version 4) has its audio
rebuilt from the generator's spectrograms in numpy, by fast Griffin-Lim or PGHI
(`ganstream.core.phase.PhaseReconstructor`), in the thread that calls the
Generator: the live engine's producer, never the audio callback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnxruntime as ort

from ganstream.core.phase import PhaseReconstructor

from .bundle import Bundle, BundleError, GraphSpec, Reconstruction, ort_reason
from .stream import probe_rows

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
COREML = "CoreMLExecutionProvider"
DIRECTML = "DmlExecutionProvider"
AUTO_ORDER = (CUDA, COREML, DIRECTML, CPU)
ALIASES = {"cpu": CPU, "cuda": CUDA, "coreml": COREML, "directml": DIRECTML, "dml": DIRECTML}
CUDNN_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
# onnxruntime's errors for a model that cannot load at all, whatever the provider.
_state = ort.capi.onnxruntime_pybind11_state
MODEL_ERRORS = (_state.InvalidProtobuf, _state.NoSuchFile, _state.InvalidGraph, _state.NoModel)
ORT_DEFAULT_SEVERITY = 2  # warning; onnxruntime has no getter, so the probe restores this


class ProviderError(RuntimeError):
    """A provider that was asked for by name cannot run here."""


def resolve_provider(provider: str) -> str | None:
    """'auto' -> None; 'cuda', 'CUDA', 'CUDAExecutionProvider' -> 'CUDAExecutionProvider'; ValueError otherwise."""
    key = provider.strip().lower()
    if key == "auto":
        return None
    if key in ALIASES:
        return ALIASES[key]
    for name in ort.get_all_providers():
        if name.lower() == key:
            return name
    raise ValueError(f"unknown provider {provider!r}; use auto, {', '.join(ALIASES)} or an onnxruntime provider name")


def default_threads() -> int:
    """Cores this process may use, minus one left free for the audio callback (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def session_options(threads: int | None = None, spinning: bool = False, memory_pattern: bool = True) -> ort.SessionOptions:
    """Sequential execution, `threads` intra-op threads (default: all cores but one), one inter-op thread.

    spinning=False lets idle pool threads sleep instead of busy-waiting, so they never
    take the audio thread's core; it costs a little latency per run.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.enable_mem_pattern = memory_pattern
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return options


def create_session(
    model_path: str | os.PathLike,
    provider: str = "auto",
    threads: int | None = None,
    *,
    spinning: bool = False,
    cudnn_conv_algo_search: str = "HEURISTIC",
) -> tuple[ort.InferenceSession, str]:
    """Open `model_path` on the first provider that really starts; return (session, provider name).

    provider: "auto" tries CUDA, CoreML, DirectML, then the CPU; or name one ("cpu", "cuda",
    "coreml", "directml", any case, or an onnxruntime name such as "CPUExecutionProvider"),
    which raises ProviderError if it cannot start. A GPU provider is probed with onnxruntime's
    logging turned down and file descriptor 2 sent to a temporary file, so a missing CUDA
    library is a debug log line, not a screen of errors. The probe briefly redirects the
    whole process's stderr: create sessions before the audio starts.
    cudnn_conv_algo_search: "HEURISTIC" (fast start), "EXHAUSTIVE" (benchmark every
    convolution on its first run; the Generator's warm-up pays for it) or "DEFAULT".
    Errors loading the model itself (a damaged file) propagate as onnxruntime raises them.
    """
    path = str(Path(model_path))
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for all cores but one), got {threads}")
    if cudnn_conv_algo_search.upper() not in CUDNN_SEARCH:
        raise ValueError(f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_SEARCH)}, got {cudnn_conv_algo_search!r}")
    wanted = resolve_provider(provider)
    available = ort.get_available_providers()

    if wanted is not None:
        if wanted not in available:
            raise ProviderError(
                f"provider {provider!r} ({wanted}) is not in this onnxruntime build; it offers: {', '.join(available)}"
            )
        if wanted == CPU:
            return _open(path, [CPU], threads, spinning), CPU
        session, reason, _ = _probe(path, wanted, threads, spinning, cudnn_conv_algo_search)
        if session is None:
            raise ProviderError(
                f"provider {provider!r} ({wanted}) is installed but did not start: {reason}. "
                f"Use provider='auto' to fall back, or 'cpu'"
            )
        return session, wanted

    cpu_session = None  # a probe that fell back to the CPU already holds one: no second load
    for candidate in AUTO_ORDER:
        if candidate == CPU or candidate not in available:
            continue
        session, reason, fallback = _probe(path, candidate, threads, spinning, cudnn_conv_algo_search)
        if session is not None:
            return session, candidate
        log.debug("%s did not start: %s", candidate, reason)
        cpu_session = cpu_session or fallback
    return cpu_session or _open(path, [CPU], threads, spinning), CPU


def open_graph(spec: GraphSpec, provider: str = "auto", threads: int | None = None, **options: Any) -> tuple[ort.InferenceSession, str]:
    """A bundle graph's session (`create_session`, with its `options`) and the provider it runs on, its inputs and
    outputs checked against the manifest; BundleError naming the file when onnxruntime cannot load it."""
    try:
        session, name = create_session(spec.file, provider, threads, **options)
    except (ProviderError, ValueError):
        raise
    except Exception as e:  # onnxruntime failed to load the model
        raise BundleError(spec.label, f"onnxruntime cannot load it: {ort_reason(e)}", spec.where or None) from None
    spec.check_session(session)
    return session, name


def _provider_entry(name: str, cudnn_conv_algo_search: str) -> str | tuple[str, dict]:
    if name == CUDA:
        return (
            CUDA,
            {
                "device_id": "0",
                "cudnn_conv_algo_search": cudnn_conv_algo_search.upper(),
                "do_copy_in_default_stream": "1",
            },
        )
    return name


def _open(path: str, providers: list, threads: int | None, spinning: bool, memory_pattern: bool = True) -> ort.InferenceSession:
    return ort.InferenceSession(path, session_options(threads, spinning, memory_pattern), providers=providers)


def _probe(
    path: str, name: str, threads: int | None, spinning: bool, cudnn_conv_algo_search: str
) -> tuple[ort.InferenceSession | None, str, ort.InferenceSession | None]:
    """Try one GPU provider quietly: (session, "", None) if it really loaded, else (None, why,
    the CPU session onnxruntime fell back to, if it made one with the usual options).

    A model that cannot be loaded at all (damaged, missing) raises onnxruntime's error.
    """
    providers = [_provider_entry(name, cudnn_conv_algo_search), CPU]
    captured: list[str] = []
    session, error = None, ""
    with _quiet_stderr(captured):
        if name == CUDA:
            _preload_cuda_libraries()
        try:
            # DirectML cannot run with memory patterns on.
            session = _open(path, providers, threads, spinning, memory_pattern=name != DIRECTML)
        except MODEL_ERRORS:
            raise
        except Exception as e:  # onnxruntime's errors derive from Exception only
            error = ort_reason(e)
    if session is not None and session.get_providers()[:1] == [name]:
        return session, "", None
    why = error or _first_error("".join(captured))
    if not why and session is not None:
        why = f"onnxruntime fell back to {session.get_providers()[0]}"
    usable = session is not None and session.get_providers() == [CPU] and name != DIRECTML
    return None, why, session if usable else None


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels of onnxruntime-gpu's `cuda` and `cudnn` extras (our `gpu` extra).

    onnxruntime's CUDA provider links against libcublasLt and friends by name, and the system's loader never looks
    in site-packages: without this a fresh GPU machine reports `libcublasLt.so.13` missing and runs on the CPU.
    `ort.preload_dlls` (onnxruntime-gpu >= 1.21; absent from older and CPU-only builds) prints the libraries it
    cannot find to stdout and may warn; a machine without them is the usual case here, so that goes to the debug
    log, and the probe's own error says why CUDA did not start. Once per process: a second call would load nothing new.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            preload()
        except Exception as e:  # e.g. onnxruntime's RuntimeError for an unusable library folder: CUDA then fails to start
            printed.write(f"{type(e).__name__}: {e}")
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


@contextlib.contextmanager
def _quiet_stderr(captured: list[str]) -> Iterator[None]:
    """Turn onnxruntime's logging down to errors and send fd 2 to a temporary file; append its text to `captured`."""
    ort.set_default_logger_severity(3)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (e.g. a GUI host): nothing to hide
        try:
            yield
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _first_error(text: str) -> str:
    """The gist of onnxruntime's first logged error, e.g. 'libcublasLt.so.13: cannot open shared object file'."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for line in text.splitlines():
        if re.search(r"\[[EW]:onnxruntime", line):
            gist = re.split(r"with error: |FAIL : |\] ", line)[-1].strip()
            return gist[:300]
    return ""


def audio_path(bundle: Bundle) -> tuple[str, ...]:
    """The graph roles that turn latents into audio, in order; for a spectral bundle without a network,
    into the spectrograms `PhaseReconstructor` rebuilds audio from."""
    if bundle.kind == "waveform" or bundle.spectral.reconstruction is not None:
        return ("generator",)
    if "fused" in bundle.graphs:
        return ("fused",)
    return ("generator", "reconstruction")


class Generator:
    """A bundle's generator on ONNX Runtime: latents (B, D) -> audio (B, segment) float32.

    Latents are cast to the graph's input dtype (float16 bundles exist) and audio back
    to float32. Each call builds its own I/O binding, so a producer thread may call it
    while another thread built it; runs go through one code path on every provider: the
    input is bound from host memory and the output written straight into a host buffer
    (on CUDA, onnxruntime does the two copies in its default stream before run returns).
    A spectral bundle without a network runs its generator graph, then `PhaseReconstructor`
    (numpy, one row at a time, calls taking turns on a lock) writes the audio into that buffer.

    A conditioned bundle (manifest `condition`) takes (B, D + C): each latent with its condition
    appended (MIDI pitch, then velocity in [0, 1] for pitch+velocity), which the generator graph
    gets as its second input; `condition_size` is C (0 for other bundles).
    """

    def __init__(
        self,
        bundle: Bundle,
        provider: str = "auto",
        threads: int | None = None,
        *,
        spinning: bool = False,
        cudnn_conv_algo_search: str = "HEURISTIC",
        warmup_batch_sizes: Sequence[int] = (1,),
    ):
        """warmup_batch_sizes: the batch sizes you will run; each is run once here, so the first
        real call does not pay for allocation or (on CUDA) the convolution algorithm search."""
        # Every graph but the last is a stage whose output feeds the next one (a spectral
        # bundle's generator, when it has no fused graph).
        self._stages: list[tuple[ort.InferenceSession, str, str, np.dtype]] = []
        for role in audio_path(bundle):
            spec = bundle.graph(role)
            session, self.provider = open_graph(spec, provider, threads, spinning=spinning, cudnn_conv_algo_search=cudnn_conv_algo_search)
            self._stages.append((session, spec.inputs[0].name, spec.outputs[0].name, spec.inputs[0].np_dtype))
        self.session = session  # the graph that outputs audio
        first = bundle.graph(audio_path(bundle)[0])
        self.bundle = bundle
        self.sample_rate = bundle.sample_rate
        self.segment = bundle.segment
        self.latent_size = bundle.latent_size
        self.condition = bundle.spec.condition
        self.condition_size = self.condition.columns if self.condition is not None else 0
        self._condition_input = first.inputs[1].name if self.condition_size else None
        self._label = spec.label
        self._input = spec.inputs[0].name
        self._output = spec.outputs[0].name
        self._input_dtype = first.inputs[0].np_dtype
        self._output_dtype = spec.outputs[0].np_dtype
        fallback = bundle.spectral.reconstruction if bundle.spectral is not None else None
        self._phase: PhaseReconstructor | None = None
        # How a spectral bundle's spectrograms become audio, in words (None: the generator makes audio).
        self.reconstruction = None if bundle.kind == "waveform" else "its reconstruction network"
        if fallback is not None:
            s = bundle.spectral
            self._phase = PhaseReconstructor(s.params, s.norm, s.frames, fallback.method, fallback.iterations, fallback.initial_phase)
            self._phase_lock = threading.Lock()
            self.reconstruction = f"{fallback.describe()}, in numpy"
        for batch in warmup_batch_sizes:
            self._warm_up(int(batch))

    def __repr__(self) -> str:
        return f"Generator({self.bundle.name!r}, provider={self.provider!r}, segment={self.segment}, sample_rate={self.sample_rate})"

    def generate(self, z: np.ndarray) -> np.ndarray:
        """(B, D) latents (a conditioned bundle's: (B, D + C), the condition appended) -> (B, segment) float32 audio."""
        z = self._latents(z)
        out = np.empty((z.shape[0], self.segment), dtype=np.float32)
        self._run(z, out)
        return out

    def generate_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Like generate, writing into `out`, a C-contiguous float32 (B, segment) array; returns it."""
        z = self._latents(z)
        shape = (z.shape[0], self.segment)
        if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                f"out must be a writeable C-contiguous float32 array of shape {shape}, got {out.dtype} {out.shape}"
            )
        self._run(z, out)
        return out

    def _latents(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z)
        width = self.latent_size + self.condition_size
        if z.ndim != 2 or z.shape[1] != width or z.shape[0] < 1:
            what = f"{self.latent_size} latent + {self.condition_size} condition columns" if self.condition_size else "the latent size"
            raise ValueError(f"z must have shape (B, {width}) ({what}) with B >= 1, got {z.shape}")
        return np.ascontiguousarray(z, dtype=self._input_dtype)

    def _first_feeds(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """The first graph's inputs from (B, D [+ C]): the latent, and a conditioned bundle's condition."""
        name = self._stages[0][1]
        if not self.condition_size:
            return {name: z}
        d = self.latent_size
        return {name: np.ascontiguousarray(z[:, :d]), self._condition_input: np.ascontiguousarray(z[:, d:])}

    def _before_last(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the stages before the audio graph; returns the audio graph's inputs by name."""
        feeds = self._first_feeds(z)
        for (session, _, name_out, _), following in zip(self._stages, self._stages[1:]):
            (x,) = session.run([name_out], feeds)
            feeds = {following[1]: np.ascontiguousarray(x, dtype=following[3])}
        return feeds

    def _run(self, z: np.ndarray, out: np.ndarray) -> None:
        if self._phase is not None:
            (spectrograms,) = self.session.run([self._output], self._first_feeds(z))
            with self._phase_lock:
                self._phase.reconstruct_into(spectrograms, out)
            return
        binding = self.session.io_binding()
        for name, x in self._before_last(z).items():
            binding.bind_cpu_input(name, x)
        if self._output_dtype == np.float32:
            binding.bind_output(self._output, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        else:  # float16 audio: let onnxruntime allocate it, then widen
            binding.bind_output(self._output, "cpu")
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            np.copyto(out, binding.copy_outputs_to_cpu()[0])

    def _warm_up(self, batch: int) -> None:
        """Run once with plain session.run, which lets the graph choose its output shape, and check it."""
        z = probe_rows(self, batch).astype(self._input_dtype)  # a conditioned bundle's: a note it knows
        (audio,) = self.session.run([self._output], self._before_last(z))
        if self._phase is not None:
            s = self.bundle.spectral
            if audio.shape != (batch, s.bins, s.frames):
                raise BundleError(
                    self._label,
                    f"the generator returned spectrograms of shape {audio.shape} for {batch} latent(s); "
                    f"`spectral.bins` and `spectral.frames` make them ({batch}, {s.bins}, {s.frames})",
                    "spectral.frames",
                )
            audio = self._phase.reconstruct(audio)
        if audio.shape != (batch, self.segment):
            raise BundleError(
                self._label,
                f"the generator returned audio of shape {audio.shape} for {batch} latent(s); "
                f"`model.segment` is {self.segment}, so it must be ({batch}, {self.segment})",
                "model.segment",
            )


class Reconstructor:
    """A bundle's reconstruction network on ONNX Runtime: normalised spectrograms (B, bins, T) -> audio (B, hop * T).

    The frames axis of the graph is symbolic, so any number of frames runs, not only the
    bundle's `spectral.frames`. Input is normalised with `network.spectral.norm`.
    """

    def __init__(self, network: Reconstruction, provider: str = "auto", threads: int | None = None):
        spec = network.graph
        self.session, self.provider = open_graph(spec, provider, threads)
        self.network = network
        self._input, self._output = spec.inputs[0].name, spec.outputs[0].name
        self._dtype = spec.inputs[0].np_dtype

    def reconstruct(self, frames: np.ndarray) -> np.ndarray:
        """(B, bins, T) normalised log-magnitude -> (B, hop * T) float32 audio."""
        frames = np.asarray(frames)
        bins = self.network.spectral.bins
        if frames.ndim != 3 or frames.shape[1] != bins or frames.shape[2] < 1:
            raise ValueError(f"frames must have shape (B, {bins}, T) with T >= 1, got {frames.shape}")
        (audio,) = self.session.run([self._output], {self._input: np.ascontiguousarray(frames, dtype=self._dtype)})
        return audio.astype(np.float32, copy=False)
