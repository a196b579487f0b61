"""When a training run has diverged: its loss worse than guessing, or far above its recent level, for a while.

The loss judged is each batch's training loss (the sampled softmax loss, mean over tokens
and directions; ``train_perplexity`` is its exp). A model that guesses uniformly over the
V words of the softmax (``n_tokens_vocab``) has a full-softmax loss of ln V; its sampled
loss is about that or lower (the target competes with a sample of the vocabulary, each
sampled word weighted by the inverse of its sampling probability: the whole vocabulary
on average, no more). A batch is **bad** when its loss is

- above ``ln(UNIFORM_MARGIN * V)``: worse than guessing uniformly, with a margin (a fresh
  model starts at about ln V, and its first batches scatter around it), or,
- after the warm-up, above the mean loss of the last ``SPIKE_WINDOW`` good batches plus
  ``ln(SPIKE_FACTOR)``: a perplexity over ``SPIKE_FACTOR`` times its recent level, a spike.

The run has **diverged** when ``DIVERGED_AFTER`` batches in a row are bad once the first
``WARMUP_BATCHES`` batches of the run are past (a fresh model or a new softmax may take a
few batches to fall below the bound), when the run ends in such a streak, or at once when
the loss or the gradients are not finite.
"""
import math
from collections import deque

WARMUP_BATCHES = 20
DIVERGED_AFTER = 5
UNIFORM_MARGIN = 2.0
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 100
MAX_ROLLBACKS = 3  # ``on_divergence="rollback"``: the default bound
MAX_SKIPPED_BATCHES = 1000  # after a rollback: batches the restored weights find bad, skipped, before the run stops


class DivergenceWatch:
    """Judges the loss of each batch of a run (see the module doc).

    Args:
        n_tokens_vocab: V, the rows of the softmax.
    Attributes:
        streak: [(step, loss)] of the current run of bad batches (empty after a good one).
    """

    def __init__(self, n_tokens_vocab):
        self.n_tokens_vocab = n_tokens_vocab
        self.uniform_bound = math.log(UNIFORM_MARGIN * n_tokens_vocab)
        self.batches = 0
        self.good = deque(maxlen=SPIKE_WINDOW)  # losses of the last good batches
        self.streak = []

    @property
    def bad(self):
        """True when the last batch judged was bad: the weights it measured are not known to be good."""
        return bool(self.streak)

    @property
    def warmed_up(self):
        return self.batches > WARMUP_BATCHES

    def is_bad(self, loss):
        """Whether a batch's loss is bad now (not recorded)."""
        return not math.isfinite(loss) or loss > self.uniform_bound or (
            self.warmed_up and self.good and loss > self._mean() + math.log(SPIKE_FACTOR))

    def judge(self, step, loss, grad_norm=0.0, last=False):
        """Record the loss (and gradient norm) of batch ``step``; ``last``: the run's last batch. Return why
        the run has diverged (a phrase naming the loss and the batches), or None."""
        self.batches += 1
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite and not self.is_bad(loss):
            self.good.append(loss)
            self.streak = []
            return None
        self.streak.append((step, loss))
        if not finite:
            return f"loss {loss:.4g}, gradient norm {grad_norm:.4g}: not finite (the batch was not applied)"
        if len(self.streak) >= DIVERGED_AFTER and (self.warmed_up or last):
            return self.reason()
        return None

    def reason(self):
        """Why the current streak of bad batches is bad: the last loss, the bound, the batches."""
        (first, _), (_, loss) = self.streak[0], self.streak[-1]
        if loss > self.uniform_bound:
            why = (f"above ln({UNIFORM_MARGIN:g} x {self.n_tokens_vocab}) = {self.uniform_bound:.2f}, worse than "
                   f"guessing uniformly among the {self.n_tokens_vocab} words of the softmax")
        else:
            why = (f"a perplexity over {SPIKE_FACTOR:g} x {math.exp(self._mean()):.4g}, that of the mean loss "
                   f"{self._mean():.3g} of the {len(self.good)} good batches before")
        n = len(self.streak)
        return f"loss {loss:.4g}, {why}, for {n} batch{'es' if n > 1 else ''} since batch {first}"

    def _mean(self):
        return sum(self.good) / len(self.good)
