"""`hydra/sweeper=search` (`+search=NAME`): search for the best per-stage hybrid with Optuna, under a compute budget.

    python run.py -m +experiment=mini +search=hybrid                 # conf/search/hybrid.yaml: top-1 vs MACs
    python run.py -m +experiment=mini +search=hybrid_budget          # top-1 under hydra.sweeper.max_gmacs
    python -m analysis front multirun/search/hybrid                  # the Pareto front, table and plot

The space (`hydra.sweeper.space`, declared in conf/search/NAME.yaml) gives, per stage, the choices of `mixer`
and optionally `norm`, `act` and `mlp_ratios` (one list for every stage, or one list per stage). Each candidate is
a list per stage (`mixer=[pool,pool,attn,attn]`); its MACs come from building the model on the meta device
(metaformer.engine.validation.validate, which also refuses a candidate the model cannot build, and
metaformer.profile: the same count as the run's results.json), so a candidate over `max_gmacs` is told to Optuna
as pruned without any training, and a budget below the cheapest candidate is refused before the first one.
The objectives are results.json keys (`top1` and `best_top1` maximised, `gmacs` and `params_m` minimised): two
give a Pareto front (NSGA-II or multi-objective TPE), one gives the best top-1 under the budget.

Why our own sweeper and not hydra-optuna-sweeper: its latest release (1.3.0) requires optuna>=2.10,<3.0, the
2021-era Optuna, which predates SQLAlchemy 2 and NumPy 2 that this stack has (optuna 2.x's RDB storage uses
SQLAlchemy 1.x calls), and it cannot keep a study in a storage of the sweep folder, skip a candidate before
training, nor tell a diverged run as failed. So this sweeper uses the current Optuna's ask-and-tell interface
(`study.ask()`, `study.tell()`) and shares the plumbing of the adaptive study (base.py): jobs go through whatever
launcher is configured, and the trials' numbers are read from their run folders.

The study lives in `<sweep dir>/optuna.db` (SQLite, `load_if_exists`), each trained trial in the run folder
`<sweep dir>/trial_<number>`: the same command run again (with a larger `n_trials`, say) continues the same
study. A trial that was training when the command was stopped is launched again into its folder (run.py resumes
it from last.pt) and told then; a finished trial is never trained again, and a candidate already trained is told
that trial's result without training. A run that failed or diverged is told as FAIL (not 0%) and the search goes
on. `n_trials` counts trained trials; over-budget, invalid and repeated candidates are not trained and not counted.
`search.json` in the sweep folder says what was searched, for `python -m analysis front`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.metaformer_sweepers.base import FolderSweeper, Job, check_options, override_key, refuse

log = logging.getLogger(__name__)

STATE = "search.json"
STUDY = "search"
# Objective name -> Optuna's direction; the name is the results.json key.
OBJECTIVES = {"top1": "maximize", "best_top1": "maximize", "gmacs": "minimize", "params_m": "minimize"}
SAMPLERS = ("tpe", "nsga2", "random")
# Searched key -> the override that sets it per stage.
SPACE_KEYS = {"mixer": "mixer", "norm": "norm", "act": "act", "mlp_ratios": "model.mlp_ratios"}
OPTIONS = ("space", "objectives", "max_gmacs", "n_trials", "sampler", "seed", "population_size", "batch_size",
           "references", "baseline", "max_rejected", "max_batch_size")  # fmt: skip


def _plain(value: Any) -> Any:
    """A config node as plain lists and dicts; anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class SearchSpace:
    """Per-stage choices: key -> one list of choices per stage."""

    def __init__(self, choices: dict[str, list[list[Any]]]) -> None:
        self.choices = choices

    @classmethod
    def from_config(cls, space: Any, stages: int) -> SearchSpace:
        """Check `space` (key -> a list of choices, or a list of them per stage) against the registries."""
        from metaformer.norms import list_norms
        from mixers import list_mixers
        from mixers.acts import list_acts

        registries = {"mixer": list_mixers(), "norm": list_norms(), "act": list_acts()}
        space = _plain(space)
        if not isinstance(space, Mapping) or not any(v is not None for v in space.values()):
            refuse("hydra.sweeper.space is empty: give per-stage choices, e.g. space.mixer=[pool,attn] "
                   "(conf/search/*.yaml)")  # fmt: skip
        choices: dict[str, list[list[Any]]] = {}
        for key, value in space.items():
            if key not in SPACE_KEYS:
                refuse(f"hydra.sweeper.space.{key}: not searchable; the space takes {', '.join(SPACE_KEYS)}")
            if value is None:
                continue
            if not isinstance(value, list) or not value:
                refuse(f"hydra.sweeper.space.{key} is an empty choice list; give at least one choice")
            per_stage = value if all(isinstance(v, list) for v in value) else [value] * stages
            if len(per_stage) != stages:
                refuse(
                    f"hydra.sweeper.space.{key} gives {len(per_stage)} stage lists; the model has {stages} stages"
                )
            for i, stage in enumerate(per_stage, start=1):
                if not stage:
                    refuse(
                        f"hydra.sweeper.space.{key}: stage {i}'s choice list is empty; give at least one choice"
                    )
                known = registries.get(key)
                for choice in stage:
                    if known is not None and choice not in known:
                        refuse(
                            f"unknown {key} '{choice}' in hydra.sweeper.space.{key}; choose from: {', '.join(known)}"
                        )
                    if key == "mlp_ratios" and not (isinstance(choice, int | float) and choice > 0):
                        refuse(f"hydra.sweeper.space.mlp_ratios: {choice!r} is not a positive number")
            choices[key] = [list(dict.fromkeys(stage)) for stage in per_stage]
        return cls(choices)

    @property
    def stages(self) -> int:
        return len(next(iter(self.choices.values())))

    def suggest(self, trial: Any) -> dict[str, list[Any]]:
        """One candidate from an Optuna trial: key -> one choice per stage (params named `mixer.1` ...)."""
        return {
            key: [
                trial.suggest_categorical(f"{key}.{i}", stage) for i, stage in enumerate(per_stage, start=1)
            ]
            for key, per_stage in self.choices.items()
        }

    def params(self, candidate: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """Optuna params of a (partial) candidate, for enqueue_trial."""
        return {f"{key}.{i}": v for key, values in candidate.items() for i, v in enumerate(values, start=1)}

    @staticmethod
    def overrides(candidate: Mapping[str, Sequence[Any]]) -> list[str]:
        """`mixer=[pool,pool,attn,attn]`, ... for a candidate."""
        return [
            f"{SPACE_KEYS[key]}=[{','.join(str(v) for v in values)}]" for key, values in candidate.items()
        ]

    def check_candidate(self, candidate: Any, what: str) -> dict[str, list[Any]]:
        """A hand-given candidate (references, baseline): known keys, one value per stage, in the space."""
        candidate = _plain(candidate)
        if not isinstance(candidate, Mapping):
            refuse(f"hydra.sweeper.{what}: give a mapping such as {{mixer: [pool, pool, attn, attn]}}")
        out = {}
        for key, values in candidate.items():
            if key not in self.choices or not isinstance(values, list) or len(values) != self.stages:
                refuse(f"hydra.sweeper.{what}: {key}={values} is not one choice per stage of the searched keys "
                       f"({', '.join(self.choices)})")  # fmt: skip
            out[key] = list(values)
        return out


class SearchSweeper(FolderSweeper):
    """Optuna ask-and-tell over a per-stage space; each trial an ordinary run folder."""

    name = "search"

    def __init__(
        self,
        space: Any = None,
        objectives: Any = ("top1", "gmacs"),
        max_gmacs: float | None = None,
        n_trials: int = 20,
        sampler: str = "tpe",
        seed: int = 0,
        population_size: int = 8,
        batch_size: int | None = None,
        references: Any = None,
        baseline: Any = None,
        max_rejected: int = 200,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        check_options(self.name, unknown, OPTIONS)
        super().__init__(max_batch_size)
        objectives = list(_plain(objectives) or [])
        if not objectives:
            refuse("hydra.sweeper.objectives is empty; give one or two of: " + ", ".join(OBJECTIVES))
        for name in objectives:
            if name not in OBJECTIVES:
                refuse(
                    f"unknown objective '{name}' in hydra.sweeper.objectives; choose from: {', '.join(OBJECTIVES)}"
                )
        if len(set(objectives)) != len(objectives):
            refuse(f"hydra.sweeper.objectives={objectives} names an objective twice")
        if sampler not in SAMPLERS:
            refuse(f"unknown hydra.sweeper.sampler '{sampler}'; choose from: {', '.join(SAMPLERS)}")
        if max_gmacs is not None and not max_gmacs > 0:
            refuse(f"hydra.sweeper.max_gmacs={max_gmacs}: give a positive number of GMACs, or null")
        for key, value in (("n_trials", n_trials), ("population_size", population_size),
                           ("max_rejected", max_rejected), ("batch_size", batch_size)):  # fmt: skip
            if value is not None and (not isinstance(value, int) or value < (0 if key == "n_trials" else 1)):
                refuse(f"hydra.sweeper.{key}={value}: give a positive whole number")
        self.space_cfg = _plain(space)
        self.objectives = objectives
        self.max_gmacs = max_gmacs
        self.n_trials = n_trials
        self.sampler_name = sampler
        self.seed = seed
        self.population_size = population_size
        self.batch_size = batch_size
        self.references_cfg = _plain(references) or []
        self.baseline_cfg = _plain(baseline)
        self.max_rejected = max_rejected
        self._costs: dict[str, float] = {}

    # Before any training: the space, the base model, the budget.

    def base(self, fixed: list[str]) -> tuple[DictConfig, Any]:
        """The composed config of the fixed overrides and what validation resolves it to."""
        from metaformer.engine.validation import validate
        from metaformer.errors import ConfigError, fail

        cfg = self.compose(fixed)
        try:
            return cfg, validate(cfg)
        except ConfigError as e:
            fail(str(e), e.exit_code)

    def cost(self, base: DictConfig, candidate: dict[str, list[Any]]) -> float:
        """The candidate's GMACs, from its model built on the meta device; ConfigError when it cannot be built.
        The candidate's config is the fixed overrides' (`base`, composed once) with its per-stage lists set: the
        searched keys are plain values, so composing each candidate again would give the same config, slower."""
        import torch

        from metaformer.engine.validation import build_model, data_sizes, validate
        from metaformer.profile import profile

        key = " ".join(SearchSpace.overrides(candidate))
        if key not in self._costs:
            cfg = base.copy()
            for name, values in candidate.items():
                OmegaConf.update(cfg, SPACE_KEYS[name], list(values), merge=False)
            spec = validate(cfg)
            with torch.device("meta"):
                model = build_model(cfg.model.name, spec.model_kwargs, data_sizes(cfg.data))
            self._costs[key] = profile(model)["gmacs"]
        return self._costs[key]

    def cheapest(self, cfg: DictConfig, spec: Any, space: SearchSpace) -> tuple[float, dict[str, list[Any]]]:
        """The least GMACs of any candidate, and that candidate's costly keys: MACs add up over the stages (norms
        and activations count none), so each stage takes its cheapest (mixer, mlp ratio) pair, measured by
        building models with one pair in every stage on the meta device."""
        import itertools

        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        from metaformer.engine.validation import build_model, data_sizes
        from metaformer.errors import ConfigError, fail

        mixers = space.choices.get("mixer") or [[None]] * space.stages
        ratios = space.choices.get("mlp_ratios") or [[None]] * space.stages
        pairs = sorted(
            {p for m, r in zip(mixers, ratios, strict=True) for p in itertools.product(m, r)}, key=str
        )
        stage_cost: dict[tuple, list[float]] = {}
        rest = math.inf
        for mixer, ratio in pairs:
            kwargs = dict(spec.model_kwargs)
            if mixer is not None:
                kwargs["mixer"] = mixer
            if ratio is not None:
                kwargs["mlp_ratios"] = [ratio] * space.stages
            try:
                with torch.device("meta"):
                    model = build_model(cfg.model.name, kwargs, data_sizes(cfg.data))
            except ConfigError as e:
                fail(f"the space's {mixer or ''} {ratio or ''} cannot be built: {e}".replace("  ", " "), 2)
            x = torch.zeros(1, model.in_chans, *_pair(model.img_size), device="meta")
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model.eval()(x)
            counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
            root = type(model).__name__
            stages = [counts.get(f"{root}.stages.{i}", 0) / 2e9 for i in range(space.stages)]
            stage_cost[(mixer, ratio)] = stages
            rest = min(rest, counter.get_total_flops() / 2e9 - sum(stages))
        total, best = rest, {"mixer": [], "mlp_ratios": []}
        for i in range(space.stages):
            options = list(itertools.product(mixers[i], ratios[i]))
            m, r = min(options, key=lambda p: stage_cost[p][i])
            total += stage_cost[(m, r)][i]
            best["mixer"].append(m)
            best["mlp_ratios"].append(r)
        return total, {k: v for k, v in best.items() if k in space.choices}

    def make_sampler(self) -> Any:
        import optuna

        if self.sampler_name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=self.seed)
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        return optuna.samplers.TPESampler(seed=self.seed)

    def default_batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        assert self.config is not None
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        return n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else 1

    # The search.

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        fixed, swept = self.parse(arguments)
        if swept:
            refuse("the search sweeper takes no swept values (" + ", ".join(s[0].partition("=")[0] for s in swept)
                   + "): declare the space in conf/search/NAME.yaml (hydra.sweeper.space)")  # fmt: skip
        searched = {SPACE_KEYS[k] for k in (self.space_cfg or {}) if k in SPACE_KEYS}
        clash = [o for o in fixed if override_key(o) in searched]
        if clash:
            refuse(f"{', '.join(clash)}: the search chooses these keys; drop them from the command")
        cfg, spec = self.base(fixed)
        space = SearchSpace.from_config(self.space_cfg, stages=len(spec.mixers))
        references = [space.check_candidate(r, "references") for r in self.references_cfg]
        baseline = space.check_candidate(self.baseline_cfg, "baseline") if self.baseline_cfg else None
        if self.max_gmacs is not None:
            least, which = self.cheapest(cfg, spec, space)
            if least > self.max_gmacs:
                refuse(f"hydra.sweeper.max_gmacs={self.max_gmacs:g} is below every candidate's cost: the cheapest, "
                       f"{' '.join(space.overrides(which))}, takes {least:.4g} GMACs")  # fmt: skip
        identity = {"fixed": fixed, "space": space.choices, "objectives": self.objectives,
                    "max_gmacs": self.max_gmacs, "sampler": self.sampler_name, "seed": self.seed}  # fmt: skip
        self.save_multirun_yaml()
        study = self.open_study(identity)
        state = {**identity, "directions": [OBJECTIVES[o] for o in self.objectives], "references": references,
                 "baseline": baseline, "model": str(cfg.model.name), "storage": "optuna.db", "study": STUDY}  # fmt: skip
        self.write_state(STATE, state)
        if not study.trials:
            for ref in references:
                study.enqueue_trial(space.params(ref), skip_if_exists=True)
        counts = self.search(study, space, fixed, cfg)
        self.write_state(STATE, {**state, "counts": counts})
        self.summary()
        return counts

    def open_study(self, identity: dict[str, Any]) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(self.sweep_dir / 'optuna.db').resolve()}"
        directions = [OBJECTIVES[o] for o in self.objectives]
        study = optuna.create_study(storage=storage, study_name=STUDY, load_if_exists=True,
                                    sampler=self.make_sampler(), directions=directions)  # fmt: skip
        known = study.user_attrs.get("identity")
        if known is None and not study.trials:
            study.set_user_attr("identity", identity)
        elif known != _plain_json(identity) or [d.name.lower() for d in study.directions] != directions:
            refuse(f"{self.sweep_dir} holds a search of another space, objectives, budget or sampler; run the same "
                   "command to continue it, or choose another hydra.sweep.dir")  # fmt: skip
        return study

    def search(self, study: Any, space: SearchSpace, fixed: list[str], base: DictConfig) -> dict[str, int]:
        """Ask, check the cost, train in batches, tell; until `n_trials` trials are trained."""
        import optuna
        from optuna.trial import TrialState

        from metaformer.errors import ConfigError

        trials = study.get_trials(deepcopy=False)
        seen: dict[str, int] = {}  # candidate -> the trained trial that has it
        for t in trials:
            if "subdir" in t.user_attrs and t.state != TrialState.RUNNING:
                seen.setdefault(t.user_attrs["key"], t.number)
        stale = [t for t in trials if t.state == TrialState.RUNNING]
        for t in [t for t in stale if "subdir" not in t.user_attrs]:
            study.tell(t.number, state=TrialState.FAIL)  # asked, never launched: the command stopped first
        resumed = [t for t in stale if "subdir" in t.user_attrs]
        if resumed:
            log.info(
                "Search: %d trials were training when the last command stopped: launching them again",
                len(resumed),
            )
            again = [(optuna.trial.Trial(study, t._trial_id), t.user_attrs["subdir"], t.user_attrs["key"],
                      t.user_attrs["overrides"]) for t in resumed]  # fmt: skip
            self.train(study, again, fixed, seen)
        trained = sum("subdir" in t.user_attrs for t in study.get_trials(deepcopy=False))
        counts = {"over_budget": 0, "invalid": 0, "repeated": 0}
        in_a_row = 0
        while trained < self.n_trials and in_a_row < self.max_rejected:
            batch: list[tuple[Any, str, str, list[str]]] = []
            repeats: list[tuple[Any, str]] = []
            while (
                len(batch) < min(self.default_batch(), self.n_trials - trained)
                and in_a_row < self.max_rejected
            ):
                trial = study.ask()
                candidate = space.suggest(trial)
                overrides = space.overrides(candidate)
                key = " ".join(overrides)
                trial.set_user_attr("key", key)
                if key in seen or key in {b[2] for b in batch}:
                    repeats.append((trial, key))
                    counts["repeated"] += 1
                    in_a_row += 1
                    continue
                try:
                    gmacs = self.cost(base, candidate)
                except ConfigError as e:
                    trial.set_user_attr("error", str(e))
                    study.tell(trial, state=TrialState.FAIL)
                    counts["invalid"] += 1
                    in_a_row += 1
                    continue
                trial.set_user_attr("gmacs", gmacs)
                if self.max_gmacs is not None and gmacs > self.max_gmacs:
                    trial.set_user_attr(
                        "rejected", f"over the budget: {gmacs:.4g} > {self.max_gmacs:g} GMACs"
                    )
                    study.tell(trial, state=TrialState.PRUNED)
                    counts["over_budget"] += 1
                    in_a_row += 1
                    continue
                subdir = f"trial_{trial.number}"
                trial.set_user_attr("subdir", subdir)
                trial.set_user_attr("overrides", overrides)
                batch.append((trial, subdir, key, overrides))
                in_a_row = 0
            if batch:
                log.info("Search: training trials %s", ", ".join(str(b[0].number) for b in batch))
                self.train(study, batch, fixed, seen)
                trained += len(batch)
            for trial, key in repeats:  # a candidate trained before: its result, no training
                self.tell_repeat(study, trial, seen[key])
            if not batch and not repeats:
                break
        if in_a_row >= self.max_rejected:
            log.warning("Search: %d candidates in a row were over budget, invalid or already trained: stopping with "
                        "%d of %d trials trained", in_a_row, trained, self.n_trials)  # fmt: skip
        return {"trained": trained, **counts}

    def train(self, study: Any, batch: list[tuple[Any, str, str, list[str]]], fixed: list[str],
              seen: dict[str, int]) -> None:  # fmt: skip
        """Launch the batch's runs, then tell each trial its objectives, or FAIL for a run that did not complete."""
        from optuna.trial import TrialState

        results = self.launch([Job(subdir, (*fixed, *overrides), cost=trial.user_attrs.get("gmacs", 0.0))
                               for trial, subdir, _, overrides in batch])  # fmt: skip
        for trial, subdir, key, _ in batch:
            record = results.get(subdir, {})
            values = [record.get(name) for name in self.objectives]
            ok = record.get("status") == "completed" and all(
                isinstance(v, int | float) and math.isfinite(v) for v in values
            )
            trial.set_user_attr("status", record.get("status") or "no results.json")
            if record.get("error"):
                trial.set_user_attr("error", str(record["error"])[:500])
            if ok:
                study.tell(trial, [float(v) for v in values])
            else:
                study.tell(trial, state=TrialState.FAIL)
            seen.setdefault(key, trial.number)

    @staticmethod
    def tell_repeat(study: Any, trial: Any, original: int) -> None:
        from optuna.trial import TrialState

        first = study.get_trials(deepcopy=False)[original]
        trial.set_user_attr("repeat_of", original)
        if first.state == TrialState.COMPLETE:
            study.tell(trial, first.values)
        else:
            study.tell(trial, state=TrialState.FAIL)

    def summary(self) -> None:
        """Print the front (analysis.front) of the runs so far."""
        from analysis.collect import AnalysisError
        from analysis.front import render_front, search_front

        try:
            front = search_front(self.sweep_dir)
        except AnalysisError as e:
            log.warning("Search: no front yet (%s)", e)
            return
        print(render_front(front), flush=True)


def _pair(size: Any) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _plain_json(value: Any) -> Any:
    """`value` as it comes back from Optuna's JSON user attributes (tuples as lists)."""
    import json

    return json.loads(json.dumps(value))
