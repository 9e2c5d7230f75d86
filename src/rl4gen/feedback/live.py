"""The live completer: people type a prompt, see completions from a loaded policy and like or
dislike them; every ``update_every`` votes the policy takes one online policy-gradient step on
those rewards, and each completion is shown with the model version that produced it.

The step is REINFORCE with the batch mean as baseline (like = 1, dislike = 0), on the summed
log-probability of each completion's tokens, with AdamW; no KL term, so keep the learning rate
small. Votes arrive from many threads: sampling and updating share one lock.
"""


import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch

LIVE_SOURCE = "live"


class LiveCompleter:
    def __init__(
        self, policy: Any, name: str = "policy", update_every: int = 8, learning_rate: float = 1e-4, num_samples: int = 3, max_prompt_chars: int = 500
    ) -> None:
        self.policy = policy
        self.name = name
        self.update_every = update_every
        self.num_samples = num_samples
        self.max_prompt_chars = max_prompt_chars
        self.version = 0
        self.pending: list[tuple[str, str, float]] = []
        self.history: list[dict[str, float]] = []
        self.optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=learning_rate)
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, max_completion_length: int = 32, temperature: float = 1.0, **options: Any) -> "LiveCompleter":
        """A completer over the causal LM in a local folder (``rl4gen sample`` loads the same)."""
        from rl4gen.config import GenerationConfig
        from rl4gen.policies.causal_lm import CausalLMPolicy

        generation = GenerationConfig(max_completion_length=max_completion_length, temperature=temperature)
        return cls(CausalLMPolicy.from_pretrained(path, generation), name=Path(path).name, **options)

    @property
    def version_label(self) -> str:
        return f"{self.name}@v{self.version}"

    def complete(self, prompt: str) -> tuple[list[str], str]:
        """``num_samples`` sampled completions and the version label that produced them."""
        with self._lock:
            completions = self.policy.sample([prompt], self.num_samples).samples
            return [str(c) for c in completions], self.version_label

    def on_vote(self, session: Any, vote: Any) -> None:
        """Collect likes and dislikes of live samples; step when ``update_every`` have arrived."""
        from rl4gen.feedback.db import Sample

        if vote.kind != "rating":
            return
        sample = session.get(Sample, vote.sample_id)
        if sample is None or sample.source != LIVE_SOURCE:
            return
        with self._lock:
            self.pending.append((sample.prompt, sample.completion, 1.0 if vote.value == "like" else 0.0))
            if len(self.pending) >= self.update_every:
                batch, self.pending = self.pending, []
                self._step(batch)

    def _step(self, batch: list[tuple[str, str, float]]) -> None:
        prompts, completions, rewards = zip(*batch, strict=True)
        r = torch.tensor(rewards)
        advantages = (r - r.mean()).to(self.policy.device)
        metrics = {"version": float(self.version + 1), "reward": float(r.mean())}
        if advantages.abs().sum() > 0:  # all alike: nothing to learn, but the version still counts votes
            rollout = self.policy.rollout_for(list(prompts), list(completions))
            logp = (self.policy.log_probs(rollout) * rollout.mask).sum(dim=1)  # (B,)
            loss = -(advantages * logp).mean()
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), 1.0)
            self.optimizer.step()
            metrics["loss"] = float(loss.detach())
        self.version += 1
        self.history.append(metrics)


def register(app: Any, render: Callable[..., Any], page_rater: Callable[..., Any], db: Any, limited: Callable[[Any], None]) -> None:
    """Add ``GET /live`` (the page) and ``POST /live`` (complete a prompt) to the app; a request
    for completions counts against the rater's rate limit like a vote."""
    from fastapi import Depends, Form, Request
    from fastapi.responses import RedirectResponse, Response
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from rl4gen.feedback.db import Sample, Vote
    from rl4gen.feedback.store import FeedbackError

    completer: LiveCompleter = app.state.completer

    @app.get("/live")
    def live_page(request: Request, session: Annotated[Session, Depends(db)]) -> Response:
        rater = page_rater(request, session)
        if rater is None:
            return RedirectResponse("/join", status_code=303)
        recent = session.scalars(
            select(Sample).where(Sample.source == LIVE_SOURCE, Sample.key.like(f"r{rater.id}:%")).order_by(Sample.id.desc()).limit(9)
        ).all()
        votes = dict(session.execute(select(Vote.sample_id, Vote.value).where(Vote.rater_id == rater.id, Vote.sample_id.in_([s.id for s in recent]))).all())
        items = [{"id": s.id, "prompt": s.prompt, "completion": s.completion, "model_version": s.model_version,
                  "vote": votes.get(s.id), "vote_id": uuid.uuid4().hex} for s in recent]
        return render(request, "live.html", rater, items=items, version=completer.version_label,
                      until=completer.update_every - len(completer.pending), updates=completer.history[-5:])

    @app.post("/live")
    def live_complete(request: Request, session: Annotated[Session, Depends(db)], prompt: Annotated[str, Form()]) -> Response:
        rater = page_rater(request, session)
        if rater is None:
            raise FeedbackError("sign in first: join with an invite token at /join.", 401)
        limited(rater)
        prompt = prompt.strip()
        if not prompt or len(prompt) > completer.max_prompt_chars:
            raise FeedbackError(f"the prompt must be 1 to {completer.max_prompt_chars} characters long.", 422)
        completions, version = completer.complete(prompt)
        for text in completions:
            session.add(Sample(prompt=prompt, completion=text, modality="text", model_version=version,
                               source=LIVE_SOURCE, key=f"r{rater.id}:{uuid.uuid4().hex}", meta={}))
        session.commit()
        return RedirectResponse("/live", status_code=303)
