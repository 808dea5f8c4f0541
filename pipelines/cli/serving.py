"""`sfr score` (one sample, JSON out) and `sfr serve` (the reward server)."""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import stat
from pathlib import Path

from pipelines.cli import CLIError, print_json
from pipelines.configs import Flags

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="score one edit with the SFReward model (JSON)")
    p.add_argument("--source", required=True, help="source image file")
    p.add_argument("--edited", required=True, help="edited image file")
    p.add_argument("--instruction", required=True)
    p.add_argument("--regions", default=None,
                   help="JSON file: a list of regions {kind, mask (COCO RLE) | bbox, region_id?} on the "
                        "source; default: proposed (when a proposer is installed), else the whole image")
    p.add_argument("--model", default="production", help="registry alias/model id, or a model directory")
    p.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available)")
    add_proposer_flags(p)
    p.set_defaults(func=cmd_score)

    s = subparsers.add_parser("serve", help="run the reward server (HTTP)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8700)
    s.add_argument("--model", default="production", help="registry alias/model id, or a model directory")
    s.add_argument("--device", default=None)
    s.add_argument("--token-file", default=None,
                   help="file holding the bearer token (outside the repository, not group/world readable); "
                        "default: $SFR_SERVER_TOKEN")
    s.add_argument("--chunk", type=int, default=None, help="items per model call inside a batch "
                                                           "(default: --max-batch)")
    for flags in serve_flags():
        flags.add_to(s)
    add_proposer_flags(s)
    s.set_defaults(func=cmd_serve)


def serve_flags() -> tuple[Flags, Flags, Flags, Flags]:
    """`sfr serve`'s settings flags, from the server's config dataclasses (names, defaults, help),
    keeping the flag names users know. Returns (server, batcher, pool, capture) Flags."""
    from sfreward.server.batcher import BatcherConfig
    from sfreward.server.capture import CaptureConfig
    from sfreward.server.config import PoolConfig, ServerConfig

    mib = (1 << 20, "MiB")
    return (
        Flags(ServerConfig, ("max_group_size", "max_request_bytes", "propose_regions", "max_regions",
                             "decode_budget_bytes", "head_timeout_s"),
              names={"max_group_size": "max-group", "max_request_bytes": "max-request-mb", "propose_regions": "propose",
                     "decode_budget_bytes": "decode-budget-mb", "head_timeout_s": "head-timeout"},
              units={"max_request_bytes": mib, "decode_budget_bytes": mib}),
        Flags(BatcherConfig, ("max_batch_size", "max_wait_ms", "max_queue"), names={"max_batch_size": "max-batch"}),
        Flags(PoolConfig, ("max_loaded", "refresh_s"),
              names={"max_loaded": "max-loaded-models", "refresh_s": "alias-refresh-s"}),
        # Capture is off unless asked for (the dataclass default is for servers that pass a capture).
        Flags(CaptureConfig, ("rate", "window"), names={"rate": "capture-rate", "window": "capture-window"},
              defaults={"rate": 0.0}),
    )


def _proposer_flags() -> Flags:
    from sfreward.regions.base import ProposerConfig

    return Flags(ProposerConfig, ("checkpoint", "model_type", "device"),
                 names={"checkpoint": "sam-checkpoint", "model_type": "sam-model-type", "device": "proposer-device"},
                 defaults={"device": None})


def add_proposer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proposer-config", default=None,
                   help="JSON file of region proposer settings (sfreward.regions.ProposerConfig fields); "
                        "default: the proposer recorded with the model at training, else classical")
    _proposer_flags().add_to(p)


def _load_regions(path: str | None) -> list | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CLIError(f"--regions: file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"--regions: {path} is not valid JSON ({e})") from None
    if isinstance(data, dict) and "regions" in data:
        data = data["regions"]
    if not isinstance(data, list):
        raise CLIError(f"--regions: {path} must hold a list of regions (or {{'regions': [...]}})")
    return data


def _load_scorer(args: argparse.Namespace, batch_size: int | None = None):
    from sfreward.inference import ScorerConfig, load

    try:
        cfg = ScorerConfig(batch_size=batch_size) if batch_size else None
        return load(args.model, home=args.home, device=args.device, config=cfg)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError, ImportError) as e:
        raise CLIError(f"--model {args.model}: cannot load the model ({e})") from None


def proposer_config(args: argparse.Namespace, trained: dict | None):
    """The ProposerConfig serving proposes with: --proposer-config, else the config recorded with
    the model (its training regions), else the default (classical); --sam-* flags override.
    Returns (config, where it came from)."""
    from sfreward.regions.base import ProposalError, ProposerConfig

    base, origin = {}, "default"
    if args.proposer_config:
        try:
            base = json.loads(Path(args.proposer_config).read_text())
        except FileNotFoundError:
            raise CLIError(f"--proposer-config: file {args.proposer_config} does not exist") from None
        except json.JSONDecodeError as e:
            raise CLIError(f"--proposer-config: {args.proposer_config} is not valid JSON ({e})") from None
        if not isinstance(base, dict):
            raise CLIError(f"--proposer-config: {args.proposer_config} must hold a JSON object of proposer settings")
        origin = args.proposer_config
    elif trained and trained.get("config") and not (args.sam_checkpoint or args.sam_model_type):
        base, origin = dict(trained["config"]), "model card"
    base.update({k: v for k, v in _proposer_flags().values(args).items() if v})
    try:
        # A model card's config proposes as it did in training, fields added since included.
        cfg = ProposerConfig.from_record(base) if origin == "model card" else ProposerConfig.from_dict(base)
    except (ProposalError, TypeError) as e:
        raise CLIError(f"proposer settings ({origin}): {e}") from None
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).expanduser().is_file():
        hint = " (recorded with the model; pass --sam-checkpoint with its local path)" if origin == "model card" else ""
        raise CLIError(f"--sam-checkpoint: SAM weights {cfg.checkpoint} do not exist{hint}")
    return cfg, origin


def trained_proposer(args: argparse.Namespace) -> dict | None:
    """The proposer record of the model named by --model: its registry card, or the
    model_card.json of a model directory; None when not recorded."""
    p = Path(args.model).expanduser()
    if p.is_dir():
        card = p / "model_card.json"
        try:
            return json.loads(card.read_text()).get("proposer") if card.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None
    from sfreward import registry
    from warehouse.workspace import Workspace

    try:
        return registry.trained_proposer(Workspace.open(args.home, create=False), args.model)
    except Exception:  # an unknown model is reported by the loader with a better message
        return None


def _warn_mismatch(cfg, trained: dict | None, model: str) -> None:
    if trained and trained.get("config_hash") != cfg.config_hash():
        log.warning("model %s was trained on regions from %s (config %s) but regions are proposed with %s "
                    "(config %s): rewards may not mean what they meant in training", model,
                    trained.get("proposer"), trained.get("config_hash"), cfg.proposer, cfg.config_hash())


def cmd_score(args: argparse.Namespace) -> int:
    from sfreward.inference import InvalidInput, decode_image, propose_regions

    for flag, path in (("--source", args.source), ("--edited", args.edited)):
        if not Path(path).is_file():
            raise CLIError(f"{flag}: file {path} does not exist")
    regions = _load_regions(args.regions)
    trained = trained_proposer(args)
    pcfg, _ = proposer_config(args, trained)
    scorer = _load_scorer(args)
    region_source = "supplied"
    if regions is None:
        try:
            src = decode_image(args.source, "--source")
            ed = decode_image(args.edited, "--edited")
        except InvalidInput as e:
            raise CLIError(str(e)) from None
        if ed.shape == src.shape:  # a size mismatch is reported by score() below
            try:
                _warn_mismatch(pcfg, trained, scorer.version)
                regions = propose_regions(src, [ed], pcfg)
            except ValueError as e:  # ProposalError: bad input for the proposer
                raise CLIError(f"region proposal failed: {e}") from None
        region_source = "whole_image" if regions is None else "proposed"
    [res] = scorer.score([args.source], [args.edited], [args.instruction], [regions])
    out = res.to_dict()
    out["region_source"] = region_source
    print_json(out)
    if not res.valid:
        raise CLIError(f"sample could not be scored: {res.error}")
    return 0


def read_token(token_file: str | None) -> str:
    """The server token from --token-file (outside the repo, private) or $SFR_SERVER_TOKEN."""
    if token_file:
        p = Path(token_file).expanduser().resolve()
        if not p.is_file():
            raise CLIError(f"--token-file: {token_file} does not exist")
        if p.is_relative_to(REPO_ROOT):
            raise CLIError(f"--token-file: {token_file} is inside the repository; keep secrets outside it")
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CLIError(f"--token-file: {token_file} is readable by group/others; chmod 600 it")
        token = p.read_text().strip()
    else:
        token = os.environ.get("SFR_SERVER_TOKEN", "").strip()
    if len(token) < 16:
        raise CLIError("no usable server token: set SFR_SERVER_TOKEN or pass --token-file "
                       "(at least 16 characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def server_config(args: argparse.Namespace, token: str, proposer: object = None):
    """The ServerConfig of `sfr serve`'s flags; a setting out of range is a one-line CLIError
    (exit 2) naming the flag, raised before the model is loaded."""
    from sfreward.server.batcher import SettingError

    server, batcher, _, _ = serve_flags()
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port: must be 0..65535, got {args.port}")
    if args.chunk is not None and args.chunk < 1:
        raise CLIError(f"--chunk: must be an integer >= 1, got {args.chunk}")
    if not 0.0 <= args.capture_rate <= 1.0:
        raise CLIError(f"--capture-rate: must be between 0 and 1, got {args.capture_rate}")
    for flag, mb in (("--max-request-mb", args.max_request_mb), ("--decode-budget-mb", args.decode_budget_mb)):
        if not (mb > 0 and mb < 1 << 30):  # also refuses NaN and inf
            raise CLIError(f"{flag}: must be a positive number of MiB, got {mb}")
    try:
        return server.build(args, token=token, proposer_config=proposer, batch=batcher.build(args))
    except SettingError as e:
        flag = "the server token" if e.field == "token" else next(
            (f.flag(e.field) for f in (server, batcher) if e.field in f.fields), e.field)
        raise CLIError(f"{flag}: {str(e).partition(': ')[2]}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sfreward.server.app import create_app
    from sfreward.server.capture import RolloutCapture
    from sfreward.server.models import ModelPool, UnknownModel
    from sfreward.server.protocol import uvicorn_config
    from warehouse.workspace import Workspace

    _, _, pool_flags, capture_flags = serve_flags()
    token = read_token(args.token_file)
    trained = trained_proposer(args)
    pcfg, origin = proposer_config(args, trained)
    config = server_config(args, token, pcfg)
    if not (args.alias_refresh_s >= 0 and args.alias_refresh_s < 1e6):
        raise CLIError(f"--alias-refresh-s: must be a number of seconds >= 0, got {args.alias_refresh_s}")
    if args.max_loaded_models < 1:
        raise CLIError(f"--max-loaded-models: must be an integer >= 1, got {args.max_loaded_models}")
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            log.warning("serving on %s: reachable from other machines; put it behind a reverse proxy "
                        "with TLS (docs/serving.md)", args.host)
    except ValueError:
        pass
    batch = args.chunk or args.max_batch
    if Path(args.model).expanduser().is_dir():
        scorer = _load_scorer(args, batch_size=batch)
        pool = ModelPool.static(scorer, {"trained_proposer": trained})
    else:
        from sfreward.inference import ScorerConfig
        from warehouse.workspace import Workspace

        try:
            pool = ModelPool.from_registry(
                Workspace.open(args.home, create=False), args.model, device=args.device,
                scorer_config=ScorerConfig(batch_size=batch),
                config=pool_flags.build(args))
        except (FileNotFoundError, UnknownModel, ValueError, RuntimeError) as e:
            raise CLIError(f"--model {args.model}: cannot load the model ({e})") from None
        scorer = pool.default
    log.info("region proposer: %s (config %s, from %s)", pcfg.proposer, pcfg.config_hash(), origin)
    capture = None
    if args.capture_rate > 0:
        try:
            capture = RolloutCapture(Workspace.open(args.home), capture_flags.build(args))
        except ValueError as e:
            raise CLIError(f"--capture-rate/--capture-window: {e}") from None
    app = create_app(pool, config, capture)
    log.info("serving model %s on http://%s:%d", scorer.version, args.host, args.port)
    uvicorn.Server(uvicorn_config(app, config.head_timeout_s, host=args.host, port=args.port, log_level="info",
                                  limit_concurrency=config.max_inflight_requests * 2)).run()
    return 0
