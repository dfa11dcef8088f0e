"""The tutorial notebook's cells: each text cell in English and Chinese, each code cell once (build.py writes both
editions from this list). The code calls only mnist-gan's public API, examples/seed_from_scratch.py and the
notebook's helpers; a function the cells need goes into tutorial_helpers.py, where ruff and the tests see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    kind: str  # "markdown" or "code"
    text: dict[str, str] = field(default_factory=dict)  # language -> Markdown
    code: str = ""


def md(en: str, zh: str) -> Cell:
    return Cell("markdown", {"en": en, "zh-CN": zh})


def code(source: str) -> Cell:
    return Cell("code", code=source)


CELLS = [
    md(r"""
# GANs from the ground up: the game, the tutorial's model, its failures and their fixes

A generative adversarial network is two networks in a game: a generator G turns random noise z into images, a
discriminator D tells real images from G's. This notebook walks from the maths of that game to a model that draws
digits on a laptop CPU:

1. **the game**: the value function, the best discriminator, what G then minimises, and why G's original loss
   stops teaching it early;
2. **the tutorial's model written from scratch** (`examples/seed_from_scratch.py`), then the same model from the
   `mnist-gan` package;
3. **training it** for a few minutes and watching samples, losses, D(x) and D(G(z));
4. **its failures reproduced and explained**: the all-ReLU generator that goes flat gray, and the drift towards
   a few digits;
5. **what fixes them**: a modern recipe at equal time, what the evaluation numbers mean, digits on demand,
   walks through the latent space, and the tutorial's "nice" sampling;
6. **your own images**: the same commands on Fashion-MNIST and on a folder of image files.

It runs end to end in about 30 minutes on 2 CPU cores (a GPU is used when there is one). Set the environment
variable `MNIST_GAN_TUTORIAL_SCALE=small` to shrink every training to a few iterations (the test suite runs it
that way, in under three minutes: the pictures are then noise, the code is the same). A full run, rendered with
its figures, is in [docs/tutorial.md](../docs/tutorial.md).
""", r"""
# 从零理解 GAN：博弈、教程的模型、它的失败与修正

生成对抗网络（GAN）是两个网络之间的一场博弈：生成器 G 把随机噪声 z 变成图像，判别器 D 区分真实图像和 G 生成的图像。
这个 notebook 从这场博弈的数学出发，一直走到一个能在笔记本电脑 CPU 上画出数字的模型：

1. **博弈**：价值函数、最优判别器、G 实际在最小化什么，以及 G 最初的损失为什么很早就学不动了；
2. **从零写出教程的模型**（`examples/seed_from_scratch.py`），再用 `mnist-gan` 包得到同一个模型；
3. **训练**几分钟，观察样本、损失、D(x) 和 D(G(z))；
4. **复现并解释它的失败**：全 ReLU 生成器变成一片灰色，以及样本逐渐偏向少数几个数字；
5. **修正方法**：同样时间下的现代方案、评估指标的含义、按需生成指定数字、潜在空间中的插值，以及教程里的 "nice" 采样；
6. **你自己的图像**：同样的命令用在 Fashion-MNIST 和一个图像文件夹上。

在 2 个 CPU 核上完整运行约需 30 分钟（有 GPU 时会自动使用）。设置环境变量 `MNIST_GAN_TUTORIAL_SCALE=small`
可以把每次训练缩短为几次迭代（测试就是这样运行的，不到三分钟；此时图像只是噪声，但代码完全相同）。
带全部图表的完整运行结果见 [docs/tutorial.zh-CN.md](../docs/tutorial.zh-CN.md)。
"""),
    code(r"""
import inspect
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import xlogy

import mnist_gan
from mnist_gan import (
    DataConfig,
    build_discriminator,
    build_generator,
    evaluate_generator,
    generate,
    generate_nice,
    interpolate,
    load_dataset,
    load_generator,
    preset,
    record_problems,
    sample_problems,
)

notebooks = Path(mnist_gan.__file__).resolve().parents[1] / "notebooks"  # this notebook's folder, in a checkout
sys.path.insert(0, str(notebooks))
from tutorial_helpers import (  # noqa: E402  (notebooks/tutorial_helpers.py: the helpers of this notebook)
    DATA,  # MNIST_GAN_TUTORIAL_DATA: mnist (downloaded once), or an IDX directory, .npz...
    RUNS,  # runs/tutorial, under the working directory
    SMALL,  # MNIST_GAN_TUTORIAL_SCALE=small: every training a few iterations
    as_grid_input,
    budget,
    fashion_or_digits,
    generator_gradient_norm,
    kl,
    normal,
    run,
    saved_checkpoints,
    show,
    show_class_drift,
    show_losses,
    show_saved_grids,
    write_image_folder,
)

MINUTES = 3  # training time of the main comparison (full size)
EVAL_SAMPLES = 200 if SMALL else 10_000  # samples per final evaluation
DRIFT_SAMPLES = 200 if SMALL else 2_000  # samples per checkpoint when following a run
torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})

data_config = preset("seed").data
data_config.data = DATA
dataset = load_dataset(data_config)
print(f"{len(dataset)} training images from {dataset.source}; torch {torch.__version__}, "
      f"{'small' if SMALL else 'full'} size")
"""),
    md(r"""
## 1. The game

D outputs the probability D(x) that x is real. Both networks play for one number, the **value function**

$$V(D, G) = \mathbb{E}_{x \sim p_\text{data}}[\log D(x)] + \mathbb{E}_{z \sim p_z}[\log(1 - D(G(z)))].$$

D wants it high (say 1 to reals, 0 to fakes), G wants it low (fool D). Training alternates a step of each.

**The best discriminator.** For a fixed G, write p_g for the distribution of G(z). At each point x, D maximises
p_data(x) log D + p_g(x) log(1 − D), whose maximum is at

$$D^*(x) = \frac{p_\text{data}(x)}{p_\text{data}(x) + p_g(x)}.$$

Where only real images occur D* is 1, where only fakes occur it is 0, and where G matches the data it is ½ — D
can do no better than a coin. In one dimension, with a Gaussian "data" distribution and three generators:
""", r"""
## 1. 博弈

D 输出 x 为真实图像的概率 D(x)。两个网络围绕同一个数博弈，即**价值函数**

$$V(D, G) = \mathbb{E}_{x \sim p_\text{data}}[\log D(x)] + \mathbb{E}_{z \sim p_z}[\log(1 - D(G(z)))].$$

D 希望它大（对真实图像输出 1，对假图像输出 0），G 希望它小（骗过 D）。训练时两者轮流各走一步。

**最优判别器。** 固定 G，记 G(z) 的分布为 p_g。在每个点 x 上，D 要最大化 p_data(x) log D + p_g(x) log(1 − D)，
其最大值在

$$D^*(x) = \frac{p_\text{data}(x)}{p_\text{data}(x) + p_g(x)}.$$

只出现真实数据的地方 D* 为 1，只出现假数据的地方为 0，而 G 与数据一致的地方为 ½——D 只能靠抛硬币。
下面是一维的例子：一个高斯"数据"分布和三个生成器：
"""),
    code(r"""
x = np.linspace(-8, 8, 4001)  # wide enough that every density below keeps all its mass on the grid
dx = x[1] - x[0]
p_data = normal(x, 2.0, 0.6)
fig, axes = plt.subplots(1, 3, figsize=(13, 3), sharey=True)
for ax, (mean, std) in zip(axes, [(-1.5, 1.0), (0.8, 0.8), (2.0, 0.6)], strict=True):
    p_g = normal(x, mean, std)
    d_star = p_data / np.maximum(p_data + p_g, 1e-300)  # where neither has mass, D* does not matter
    ax.plot(x, p_data, label="$p_{data}$")
    ax.plot(x, p_g, label="$p_g$")
    ax.plot(x, d_star, "k--", label="$D^*$")
    ax.set_title(f"G's distribution: N({mean}, {std}²)", fontsize=10)
    ax.set_xlim(-5, 6)
axes[0].legend()
plt.show()
"""),
    md(r"""
**What G then minimises.** Put D* back into V: with M = (p_data + p_g)/2,

$$V(D^*, G) = -\log 4 + 2\,\mathrm{JS}(p_\text{data} \,\|\, p_g),$$

where JS is the Jensen–Shannon divergence, 0 exactly when p_g = p_data. So against a perfect D, G minimises the
JS divergence between its distribution and the data's: the game has its optimum where G has learnt the data.

The catch is in the right panel below: move G's distribution away from the data and JS climbs to log 2, then stays
there. When the two barely overlap (early in training, when G draws noise and the data lives on a thin set of
digit images), the divergence is flat: a perfect D gives G no direction to move in.
""", r"""
**G 实际在最小化什么。** 把 D* 代回 V，令 M = (p_data + p_g)/2，得到

$$V(D^*, G) = -\log 4 + 2\,\mathrm{JS}(p_\text{data} \,\|\, p_g),$$

其中 JS 是 Jensen–Shannon 散度，当且仅当 p_g = p_data 时为 0。所以面对完美的 D，G 在最小化它的分布与数据分布之间的
JS 散度：博弈的最优点就是 G 学会了数据分布。

问题在下面右图：把 G 的分布从数据移开，JS 升到 log 2 之后就不再变化。当两者几乎不重叠时（训练初期，G 画的是噪声，
而数据集中在数字图像这个很薄的集合上），散度是平的：完美的 D 无法告诉 G 该往哪里走。
"""),
    code(r"""
means = np.linspace(-4, 2, 61)
values, js = [], []
for mean in means:
    p_g = normal(x, mean, 0.6)
    total = np.maximum(p_data + p_g, 1e-300)
    # D* = p_data / total and 1 - D* = p_g / total, each written as its own ratio: 1 - D* computed as a
    # difference would round to 0 where p_g is tiny but not 0, and log 0 is -inf
    values.append(np.sum(xlogy(p_data, p_data / total) + xlogy(p_g, p_g / total)) * dx)
    m = (p_data + p_g) / 2
    js.append(0.5 * kl(p_data, m, dx) + 0.5 * kl(p_g, m, dx))
values, js = np.array(values), np.array(js)
print(f"largest gap between V(D*, G) and -log 4 + 2 JS: {np.abs(values - (-np.log(4) + 2 * js)).max():.1e}")

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3))
left.plot(means, values, label="V(D*, G)")
left.plot(means, -np.log(4) + 2 * js, "--", label="-log 4 + 2 JS")
left.set_xlabel("mean of G's distribution (the data's is 2)")
left.legend()
right.plot(means, js, label="JS($p_{data}$ || $p_g$)")
right.axhline(np.log(2), color="k", ls=":", label="log 2")
right.set_xlabel("mean of G's distribution (the data's is 2)")
right.legend()
plt.show()
"""),
    md(r"""
**Why G's original loss saturates.** Write D(G(z)) = σ(l), where l is D's logit (what D computes before the
sigmoid). The game asks G to minimise log(1 − D(G(z))). Its slope with respect to l is −σ(l) = −D(G(z)): early on,
when D easily rejects G's images, D(G(z)) ≈ 0 and G learns almost nothing — exactly when it has most to learn.
Goodfellow et al. (2014) proposed the **non-saturating** loss instead: G minimises −log D(G(z)), the same fixed
point, whose slope −(1 − D(G(z))) is close to −1 there. The tutorial (and `mnist-gan`'s default
`--loss non-saturating`) trains G this way: binary cross-entropy of D's verdict on fakes against the label
"real". `--loss minimax` is the original.
""", r"""
**为什么 G 最初的损失会饱和。** 记 D(G(z)) = σ(l)，其中 l 是 D 的 logit（sigmoid 之前的值）。博弈要求 G 最小化
log(1 − D(G(z)))。它对 l 的斜率是 −σ(l) = −D(G(z))：训练初期 D 很容易识破 G 的图像，D(G(z)) ≈ 0，G 几乎学不到东西
——而这恰恰是它最需要学习的时候。Goodfellow 等人（2014）因此提出了**非饱和**损失：G 最小化 −log D(G(z))，不动点相同，
但在那里的斜率 −(1 − D(G(z))) 接近 −1。教程（以及 `mnist-gan` 默认的 `--loss non-saturating`）就是这样训练 G 的：
对假图像，用"真"标签计算 D 判断结果的二元交叉熵。`--loss minimax` 是最初的形式。
"""),
    code(r"""
logits = torch.linspace(-9, 9, 721, requires_grad=True)
d_fake = torch.sigmoid(logits)  # D(G(z))
minimax = torch.log1p(-d_fake)  # G minimises log(1 - D(G(z)))
non_saturating = -torch.log(d_fake)  # G minimises -log D(G(z))
(slope_minimax,) = torch.autograd.grad(minimax.sum(), logits, retain_graph=True)  # d_fake is used again
(slope_non_saturating,) = torch.autograd.grad(non_saturating.sum(), logits)

d_fake = d_fake.detach().numpy()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3))
left.plot(d_fake, minimax.detach(), label="minimax: log(1 - D(G(z)))")
left.plot(d_fake, non_saturating.detach(), label="non-saturating: -log D(G(z))")
left.set_xlabel("D(G(z))")
left.set_ylabel("G's loss")
left.legend()
right.loglog(d_fake, slope_minimax.abs(), label="minimax")
right.loglog(d_fake, slope_non_saturating.abs(), label="non-saturating")
right.set_xlabel("D(G(z))  (early in training: near 0)")
right.set_ylabel("|slope| with respect to D's logit")
right.legend()
plt.show()
at = int(np.argmin(np.abs(d_fake - 0.001)))
print(f"at D(G(z)) = {d_fake[at]:.4f}: minimax slope {slope_minimax[at]:.4f}, "
      f"non-saturating slope {slope_non_saturating[at]:.4f}")
"""),
    md(r"""
## 2. The tutorial's model, from scratch

The tutorial's GAN is a Keras DCGAN for MNIST: G maps z ~ U(−1, 1)¹⁰⁰ through a dense layer of 1,024, a dense
layer of 128·7·7 with batch normalisation, reshapes to 128 maps of 7×7, and upsamples twice with 5×5
convolutions to one 28×28 image; every activation is tanh, so pixels land in [−1, 1] like the training images.
D is a small convolutional classifier ending in one logit. `examples/seed_from_scratch.py` writes it with plain
tensors: every weight an explicit tensor with Keras' initialisation, the forward passes with
`torch.nn.functional`, the loss and the optimizer by hand. Here are G and D:
""", r"""
## 2. 从零写出教程的模型

教程里的 GAN 是一个用于 MNIST 的 Keras DCGAN：G 把 z ~ U(−1, 1)¹⁰⁰ 依次送入 1,024 维的全连接层、带批归一化的
128·7·7 维全连接层，重排成 128 张 7×7 的特征图，再经过两次上采样和 5×5 卷积得到一张 28×28 的图像；所有激活函数都是
tanh，所以像素落在 [−1, 1]，与训练图像的范围一致。D 是一个以单个 logit 结尾的小型卷积分类器。
`examples/seed_from_scratch.py` 用最朴素的张量把它写了出来：每个权重都是一个显式张量，用 Keras 的方式初始化；
前向传播用 `torch.nn.functional`；损失函数和优化器都手写。下面是 G 和 D：
"""),
    code(r"""
examples = Path(mnist_gan.__file__).resolve().parents[1] / "examples"  # beside the package in a source checkout
sys.path.insert(0, str(examples))
import seed_from_scratch as scratch  # noqa: E402

print(inspect.getsource(scratch.generator_forward))
print(inspect.getsource(scratch.discriminator_forward))
print(inspect.getsource(scratch.batch_norm))
"""),
    md(r"""
The loss is binary cross-entropy, computed from D's logit so that it never takes the log of 0, and the optimizer
is Keras' SGD with Nesterov momentum: a velocity v that remembers past gradients, and a step that looks ahead along
it.
""", r"""
损失是二元交叉熵，直接由 D 的 logit 计算，因此永远不会对 0 取对数；优化器是 Keras 带 Nesterov 动量的 SGD：
速度 v 记住过去的梯度，每一步都沿着它"向前看"。
"""),
    code(r"""
print(inspect.getsource(scratch.binary_cross_entropy))
print(inspect.getsource(scratch.nesterov_sgd_))
"""),
    md(r"""
One training iteration is the paper's algorithm in two parts. **(1) Update D**: a batch of real images labelled 1
and a batch of G's images labelled 0 (made with G in inference mode, as Keras' `G.predict` does), one gradient step
on D's loss. **(2) Update G**: a fresh batch of fakes labelled 1 — G wants D to call them real — through D, whose
weights do not change, one gradient step on G's loss: the non-saturating loss of part 1.
""", r"""
一次训练迭代就是论文里算法的两个部分。**(1) 更新 D**：一批标为 1 的真实图像和一批标为 0 的 G 生成图像
（像 Keras 的 `G.predict` 那样，在推理模式下生成），对 D 的损失做一步梯度下降。**(2) 更新 G**：重新生成一批假图像并标为 1
——G 希望 D 把它们当成真的——让它们经过权重保持不变的 D，对 G 的损失做一步梯度下降：也就是第 1 部分里的非饱和损失。
"""),
    code(r"""
print(inspect.getsource(scratch.train_step))
"""),
    md(r"""
Build the weights, count them (the Keras model's counts: 6,751,233 trainable in G, 3,485,441 in D), and train
for a few hundred iterations at the tutorial's settings: batch 32, SGD lr 0.001, momentum 0.9, Nesterov.
""", r"""
建立权重并计数（与 Keras 模型一致：G 有 6,751,233 个可训练参数，D 有 3,485,441 个），然后用教程的设置训练几百次迭代：
批大小 32，SGD 学习率 0.001，动量 0.9，Nesterov。
"""),
    code(r"""
weights_rng = torch.Generator().manual_seed(0)
G_weights, D_weights = scratch.init_generator(weights_rng), scratch.init_discriminator(weights_rng)
for name, weights in (("G", G_weights), ("D", D_weights)):
    print(f"{name}: {sum(t.numel() for t in weights.values() if t.requires_grad):,} trainable weights")

SCRATCH_ITERATIONS = 4 if SMALL else 200
started = time.perf_counter()
scratch_history = scratch.train(G_weights, D_weights, scratch.real_batches(dataset.images, 32),
                                scratch.uniform_noise(0), SCRATCH_ITERATIONS)
print(f"{SCRATCH_ITERATIONS} iterations in {time.perf_counter() - started:.0f} s; last: {scratch_history[-1]}")
with torch.no_grad():
    scratch_images = scratch.generator_forward(G_weights, scratch.uniform_noise(1)(64), training=False)
"""),
    md(r"""
**The same with the package.** `preset("seed")` is this model and this procedure; `mnist_gan.gan.models` builds the
same networks as `nn.Module`s, and `train` runs the same iterations (with checkpoints, logs, sample grids and
diagnosis around them). `tests/test_examples_seed_from_scratch.py` starts the script and `--preset seed` from the same
weights, batches and noise and checks that they end with the same weights; here each starts from its own seed,
so their samples differ in detail, not in kind.
""", r"""
**用 `mnist-gan` 包做同样的事。** `preset("seed")` 就是这个模型和这套训练流程；`mnist_gan.gan.models` 把同样的网络构建为
`nn.Module`，`train` 运行同样的迭代（外加检查点、日志、样本网格和诊断）。`tests/test_examples_seed_from_scratch.py`
让脚本和 `--preset seed` 从相同的权重、批次和噪声出发，并检查两者最终得到相同的权重；这里两者各自使用自己的随机种子，
所以样本在细节上不同，但性质一样。
"""),
    code(r"""
config = preset("seed")
print({key: getattr(config.train, key) for key in ("loss", "optimizer", "lr", "momentum", "nesterov", "batch_size",
                                                    "epochs")})
print(build_generator(config.model))
print(build_discriminator(config.model))

config = budget(config, iterations=SCRATCH_ITERATIONS, small_iterations=SCRATCH_ITERATIONS)
seed_short = run(config, "seed-short", dataset)
model_config, G, D = load_generator(seed_short.checkpoint)
show((f"from scratch, {SCRATCH_ITERATIONS} iterations", scratch_images),
     (f"mnist-gan seed, {seed_short.iteration} iterations", generate(G, model_config, 64, seed=1)))
"""),
    md(r"""
## 3. Training it for a few minutes

Now the package trains `seed` for a few minutes. It saves a grid of 64 samples from the same fixed noise every
100 iterations (so frames compare), logs the losses and D's mean outputs, and keeps a checkpoint every 250
iterations (about 80 MB each) so part 4 can follow what G draws over time.

What to watch: **D(x)**, D's mean output on real images, and **D(G(z))**, on fakes. In a healthy run neither
wins for good: D(x) stays above D(G(z)) but D(G(z)) does not collapse to 0, and d_loss stays well above 0.
""", r"""
## 3. 训练几分钟

现在用 `mnist-gan` 包训练 `seed` 几分钟。它每 100 次迭代用同一组固定噪声保存一张 64 个样本的网格（便于前后对比），
记录损失和 D 的平均输出，并每 250 次迭代保存一个检查点（每个约 80 MB），供第 4 部分追踪 G 随时间画出的内容。

要看的是：**D(x)**，D 对真实图像的平均输出；**D(G(z))**，对假图像的平均输出。健康的训练中没有一方彻底获胜：
D(x) 保持在 D(G(z)) 之上，但 D(G(z)) 不会塌到 0，d_loss 也始终明显大于 0。
"""),
    code(r"""
config = budget(preset("seed"), minutes=MINUTES)
config.train.sample_every = 2 if SMALL else 100
config.train.checkpoint_every = 3 if SMALL else 250
config.train.keep = 1000  # keep them all
seed_run = run(config, "seed", dataset)
last = seed_run.history[-1]
print(f"last logged: d_loss {last['d_loss']:.3f}, g_loss {last['g_loss']:.3f}, D(x) {last['d_x']:.3f}, "
      f"D(G(z)) {last['d_g_z']:.3f}")
show_losses(seed_run)
show_saved_grids(seed_run.run_dir)  # four of the sample grids it saved, first to last
"""),
    md(r"""
## 4. The tutorial's failures, reproduced and explained

### An all-ReLU generator goes flat gray

The tutorial reports that replacing G's tanh activations by ReLU — the output's included — gives flat gray
images while d_loss falls to ~0.0003 and g_loss climbs to ~7.6 by iteration 2,000. `preset("seed-relu")` is that
change.
""", r"""
## 4. 复现并解释教程中的失败

### 全 ReLU 生成器变成一片灰色

教程报告：把 G 的 tanh 激活（包括输出层）全部换成 ReLU 后，图像变成一片灰色，同时到第 2,000 次迭代时 d_loss 降到约
0.0003，g_loss 升到约 7.6。`preset("seed-relu")` 就是这个改动。
"""),
    code(r"""
relu_run = run(budget(preset("seed-relu"), iterations=2000), "seed-relu", dataset)
last = relu_run.history[-1]
print(f"seed-relu at iteration {last['iteration']}: d_loss {last['d_loss']:.5f}, g_loss {last['g_loss']:.2f}, "
      f"D(x) {last['d_x']:.4f}, D(G(z)) {last['d_g_z']:.4f}")
show_losses(relu_run)

relu_config, G_relu, D_relu = load_generator(relu_run.checkpoint)
seed_config, G_seed, D_seed = load_generator(seed_run.checkpoint)
relu_images, seed_images = generate(G_relu, relu_config, 64, seed=0), generate(G_seed, seed_config, 64, seed=0)
show(("seed (tanh)", seed_images), ("seed-relu", relu_images))
"""),
    md(r"""
**Why gray.** The training images are scaled to [−1, 1]: the black background, most of every digit image, is −1.
A ReLU output is never below 0, so G cannot draw the background at all; shown on the images' scale, 0 is
mid-gray. Compare the pixel values:
""", r"""
**为什么是灰色。** 训练图像被缩放到 [−1, 1]：黑色背景（占每张数字图像的大部分）是 −1。ReLU 的输出永远不小于 0，
所以 G 根本画不出背景；在图像的取值范围上显示时，0 就是中灰色。比较一下像素值的分布：
"""),
    code(r"""
real_pixels = dataset.images[:1000].float().div(127.5).sub(1).flatten()
fig, ax = plt.subplots(figsize=(8, 3))
bins = np.linspace(-1, 1, 41)
for label, pixels in (("real digits", real_pixels), ("seed (tanh) G", seed_images.flatten()),
                      ("seed-relu G", relu_images.clamp(-1, 1).flatten())):
    ax.hist(pixels.numpy(), bins=bins, histtype="step", density=True, lw=2, label=label)
ax.set_yscale("log")
ax.set_xlabel("pixel value (-1 black, +1 white)")
ax.legend()
plt.show()
print(f"real pixels below 0: {(real_pixels < 0).float().mean():.0%};  seed-relu pixels below 0: "
      f"{(relu_images < 0).float().mean():.0%}, exactly 0: {(relu_images == 0).float().mean():.0%}")
"""),
    md(r"""
**Why d_loss → 0 and g_loss climbs.** Any pixel ≥ 0 where the background should be tells D the image is fake, so
D soon rejects every fake with certainty: D(G(z)) → 0, d_loss → 0, and G's loss −log D(G(z)) grows as D grows
more certain. Two things starve G of the gradient it would need to climb out. Where the output ReLU sits at 0 its
slope is 0: no gradient reaches the weights behind those pixels. And under the original minimax loss a certain D
multiplies G's gradient by D(G(z)) ≈ 0 (part 1); the tutorial's non-saturating loss does not. Measure it — the
size of the gradient of G's loss with respect to all of G's weights, for the tanh model and the ReLU one, under
both losses:
""", r"""
**为什么 d_loss → 0 而 g_loss 上升。** 背景处任何 ≥ 0 的像素都会告诉 D 这是假图，所以 D 很快就能确定地拒绝所有假图：
D(G(z)) → 0，d_loss → 0；随着 D 越来越确定，G 的损失 −log D(G(z)) 不断增大。有两件事让 G 得不到走出困境所需的梯度：
输出层 ReLU 停在 0 的地方斜率为 0，梯度传不到这些像素背后的权重；而在最初的 minimax 损失下，确定无疑的 D 会把 G 的梯度
乘上 D(G(z)) ≈ 0（见第 1 部分），教程使用的非饱和损失则没有这个因子。下面实际测量一下——在两种损失下，
tanh 模型和 ReLU 模型中 G 的损失对 G 全部权重的梯度大小：
"""),
    code(r"""
G_LOSSES = {"non-saturating -log D(G(z))": lambda logits: F.softplus(-logits).mean(),
            "minimax log(1 - D(G(z)))": lambda logits: -F.softplus(logits).mean()}
for name, (G_k, D_k, config_k) in {"seed (tanh)": (G_seed, D_seed, seed_config),
                                    "seed-relu": (G_relu, D_relu, relu_config)}.items():
    for loss_name, loss in G_LOSSES.items():
        norm, d_fake = generator_gradient_norm(G_k, D_k, config_k, loss)
        print(f"{name:12} {loss_name:28}  D(G(z)) {d_fake:.4f}   |grad of G's loss| {norm:.2e}")
"""),
    md(r"""
**What the diagnosis says.** `mnist-gan` watches every run for these signs (`mnist_gan.diagnosis.detectors`): a run prints
a warning when its samples go flat (`flat-samples`), when they stop depending on z (`mode-collapse`), or when D
rejects every fake with certainty for several logged windows (`d-wins`). The same checks, called directly:
""", r"""
**诊断结果。** `mnist-gan` 会在每次训练中监视这些迹象（`mnist_gan.diagnosis.detectors`）：样本变得平坦（`flat-samples`）、
样本不再随 z 变化（`mode-collapse`），或者 D 连续几个记录窗口都确定地拒绝所有假图（`d-wins`）时，训练会打印警告。
直接调用同样的检查：
"""),
    code(r"""
for name, images, history in (("seed", seed_images, seed_run.history), ("seed-relu", relu_images, relu_run.history)):
    problems = sample_problems(images) + record_problems(history)
    print(f"{name}:")
    for problem in problems:
        print(f"  [{problem.code}] {problem.message}")
    if not problems:
        print("  [-] no problem found")
"""),
    md(r"""
### The drift towards a few digits

The tutorial also noticed that, trained longer, its samples favour a few digits. To see it, the checkpoints of
part 3's run are scored by a digit classifier trained on the data set itself (`mnist_gan.evaluation.metrics`; trained once
and cached): which digit each sample looks like, as a histogram over training, beside the FID (the distance
between the classifier's features of samples and of held-out real digits; lower is better). Real digits are
about 10% of each class.
""", r"""
### 偏向少数几个数字

教程还注意到，训练更久之后样本会偏向少数几个数字。为了看到这一点，用一个在数据集本身上训练的数字分类器
（`mnist_gan.evaluation.metrics`；只训练一次并缓存）为第 3 部分训练的各个检查点打分：每个样本像哪个数字，画成随训练变化的直方图，
旁边是 FID（样本与留出的真实数字在分类器特征上的距离，越低越好）。真实数字中每一类约占 10%。
"""),
    code(r"""
iterations, histograms, fids = [], [], []
for iteration, path in saved_checkpoints(seed_run.run_dir):
    config_k, G_k, _ = load_generator(path)
    figures = evaluate_generator(G_k, config_k, dataset, n=DRIFT_SAMPLES, seed=0)
    iterations.append(iteration)
    histograms.append(figures["class_histogram"])
    fids.append(figures["fid"])
    print(f"iteration {iterations[-1]:5}: FID {figures['fid']:7.1f}, classes covered {figures['classes_covered']}, "
          f"largest class {max(figures['class_histogram']):.0%}")
show_class_drift(iterations, histograms, fids)
"""),
    md(r"""
The diagnosis has no warning for a drift between digits (the samples still vary with z, so it is not mode
collapse in the `mode-collapse` sense); the class histogram and `classes_covered` of `mnist-gan evaluate` are
where it shows.

## 5. What fixes them

### A modern recipe at equal time

`preset("recommended")` keeps the idea and changes the recipe: strided (transposed) convolutions with batch
normalisation in G (Radford et al. 2016), spectral normalisation in D (Miyato et al. 2018), the least-squares loss
(Mao et al. 2017), Adam at 1.6e-3 (eight times Radford's rate) for both networks, a moving average of G's weights for
sampling, and self-conditioning (Liu et al. 2020): before training, the images are sorted into 100 clusters by
k-means on their pixels, no labels read, and G and D are told each image's cluster, so G never has to find the
kinds of digits on its own. Same data, same minutes:
""", r"""
诊断没有针对"数字之间偏移"的警告（样本仍然随 z 变化，所以不是 `mode-collapse` 意义上的模式坍塌）；
它体现在 `mnist-gan evaluate` 的类别直方图和 `classes_covered` 中。

## 5. 修正方法

### 同样时间下的现代方案

`preset("recommended")` 保留了思路，换了配方：G 使用带批归一化的步长（转置）卷积（Radford 等，2016），
D 使用谱归一化（Miyato 等，2018），最小二乘损失（Mao 等，2017），两个网络都用学习率 1.6e-3 的 Adam 优化器（Radford 的八倍），
用于采样的 G 权重滑动平均，以及自条件化（Liu 等，2020）：训练前先用 k-means 按像素把图像分成 100 个簇（不读取任何标签），
再把每张图像所属的簇告诉 G 和 D，于是 G 不必自己去发现有哪几类数字。同样的数据，同样的分钟数：
"""),
    code(r"""
config = budget(preset("recommended"), minutes=MINUTES)
config.train.sample_every = 0  # only at the end
recommended_run = run(config, "recommended", dataset)
rec_config, G_rec, D_rec = load_generator(recommended_run.checkpoint)
show((f"seed, {seed_run.iteration} iterations", seed_images),
     (f"recommended, {recommended_run.iteration} iterations", generate(G_rec, rec_config, 64, seed=0)))
"""),
    md(r"""
**The evaluation numbers**, on equally many samples of each (what `mnist-gan evaluate RUN` prints):

- **FID**: the Fréchet distance between Gaussians fitted to the classifier's features of samples and of held-out
  real digits. 0 means the same statistics; lower is better. It mixes quality and variety in one number.
- **KID**: the same comparison with a kernel instead of Gaussians; unbiased, so comparable across sample sizes.
- **classifier score**: the Inception Score with the data set's own classifier: high when each sample is clearly
  one digit *and* all digits occur (10 is the ceiling).
- **classes covered**: digits that make up at least 5% of the samples.
- **precision / recall**: the share of samples that land among real digits (quality), and of real digits that
  samples come near (variety).
- **coverage**: the share of real digits that have a sample among their nearest real neighbours (variety).
  Recall can be flattered by samples far from any digit, whose neighbourhoods are wide; coverage cannot.
- **memorization**: how close samples sit to their nearest training image, relative to fresh real digits;
  well below 1 would mean G copies its training set.
""", r"""
**评估指标**，对两者各取同样多的样本（即 `mnist-gan evaluate RUN` 打印的内容）：

- **FID**：对样本和留出的真实数字在分类器特征上分别拟合高斯分布，再计算两者之间的 Fréchet 距离。0 表示统计量相同；
  越低越好。它把质量和多样性混在一个数里。
- **KID**：同样的比较，用核函数代替高斯分布；它是无偏的，因此不同样本数之间可以比较。
- **classifier score**：用数据集自己的分类器计算的 Inception Score：当每个样本都清楚地是某个数字、*并且*所有数字都出现时
  它就高（上限是 10）。
- **classes covered**：占样本至少 5% 的数字个数。
- **precision / recall**：落在真实数字之中的样本比例（质量），以及被样本靠近的真实数字比例（多样性）。
- **coverage**：在其最近的真实邻居范围内有样本的真实数字比例（多样性）。远离所有数字的样本邻域很宽，会抬高 recall，
  但抬不高 coverage。
- **memorization**：样本与最近的训练图像之间的距离，相对于新的真实数字的同一距离；远小于 1 意味着 G 在复制训练集。
"""),
    code(r"""
rows = [("FID", "fid", "{:.1f}"), ("KID", "kid", "{:.4f}"), ("classifier score", "classifier_score", "{:.2f}"),
        ("classes covered", "classes_covered", "{}"), ("precision", "precision", "{:.3f}"),
        ("recall", "recall", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
        ("memorization", "memorization", "{:.2f}")]
scores = {name: evaluate_generator(G_k, config_k, dataset, n=EVAL_SAMPLES, seed=0)
          for name, (G_k, config_k) in {"seed": (G_seed, seed_config), "recommended": (G_rec, rec_config)}.items()}
print(f"{EVAL_SAMPLES} samples each; seed trained {seed_run.iteration} iterations, recommended "
      f"{recommended_run.iteration}, in the same time")
print(f"{'':18}{'seed':>12}{'recommended':>14}")
for label, key, form in rows:
    print(f"{label:18}{form.format(scores['seed'][key]):>12}{form.format(scores['recommended'][key]):>14}")
"""),
    md(r"""
### Digits on demand

A **conditional** GAN gives G and D the label too: G draws the digit it is asked for, and D judges whether an image
is a real example *of that digit* (a projection discriminator). Any preset takes `--conditional`; each column
below is one digit, each row one z:
""", r"""
### 按需生成指定数字

**条件** GAN 把标签也交给 G 和 D：G 画出被要求的数字，D 判断一张图像是否是*该数字*的真实样本（投影判别器）。
任何预设都可以加上 `--conditional`；下图每一列是一个数字，每一行是一个 z：
"""),
    code(r"""
config = budget(preset("recommended"), minutes=2)
config.model.conditional = True
config.model.self_condition = 0  # the labels take the place of the preset's clusters
config.train.sample_every = 0
conditional_run = run(config, "conditional", dataset)
cond_config, G_cond, D_cond = load_generator(conditional_run.checkpoint)
show(("0-9, one column per digit", generate(G_cond, cond_config, 100, seed=0)),
     ("only 7s", generate(G_cond, cond_config, 100, seed=1, digit=7)), nrow=10, size=4)
"""),
    md(r"""
### Walking through the latent space

Between two noise vectors, G's images change smoothly — G has learnt a continuous map, not a lookup table of
digits. Gaussian z walk along a great circle (slerp), uniform z along a straight line; a conditional G can also
walk its label from one digit to another:
""", r"""
### 在潜在空间中漫步

在两个噪声向量之间，G 生成的图像平滑地变化——G 学到的是一个连续映射，而不是一张数字查找表。高斯 z 沿大圆插值（slerp），
均匀 z 沿直线插值；条件 G 还可以让标签从一个数字渐变到另一个：
"""),
    code(r"""
walks = interpolate(G_rec, rec_config, steps=10, rows=4, seed=0)  # (4, 10, 1, 28, 28)
digit_walk = interpolate(G_cond, cond_config, steps=10, rows=2, seed=0, from_digit=1, to_digit=7)
show(("recommended: 4 walks", walks.flatten(0, 1)), ("conditional: from 1 to 7", digit_walk.flatten(0, 1)),
     nrow=10, size=5)
"""),
    md(r"""
### The tutorial's "nice" samples

The tutorial's `--nice` mode draws 20 times as many samples as it needs and keeps those D rates most real. It
cannot fix a weak G, but it hides its worst draws:
""", r"""
### 教程里的 "nice" 样本

教程的 `--nice` 模式先生成所需数量 20 倍的样本，再保留 D 认为最真实的那些。它修不好一个弱的 G，但能藏起最差的样本：
"""),
    code(r"""
kept = 16 if SMALL else 64
nice, nice_scores = generate_nice(G_seed, D_seed, seed_config, kept, seed=0)  # the best of 20 * kept
print(f"D's probability 'real': {nice_scores.min():.3f} to {nice_scores.max():.3f} for the {kept} kept of "
      f"{20 * kept:,}")
show((f"seed: {kept} samples", seed_images[:kept]), (f"seed: the {kept} of {20 * kept:,} D likes best", nice))
"""),
    md(r"""
## 6. Your own images

Nothing above is specific to digits. Every command and `load_dataset` take `--data` (`DataConfig.data`): a named
set (`mnist`, `fashion-mnist`, `kmnist`, `emnist-letters`), an IDX directory, a Keras-style `.npz`, or a folder of
image files. Fashion-MNIST, the standard harder 28x28 set (ten kinds of clothing), comes from Debian's
`dataset-fashion-mnist` package without a network, or is downloaded once and checked against its published sums.
Its class names travel with it: the evaluation tables, `mnist-gan generate --class sneaker` and the browser
explorer use them.
""", r"""
## 6. 你自己的图像

上面的一切都不限于数字。每个命令和 `load_dataset` 都接受 `--data`（`DataConfig.data`）：一个有名字的数据集
（`mnist`、`fashion-mnist`、`kmnist`、`emnist-letters`）、一个 IDX 目录、一个 Keras 格式的 `.npz`，或者一个图像文件夹。
Fashion-MNIST 是更难的标准 28x28 数据集（十类服饰）：没有网络时来自 Debian 的 `dataset-fashion-mnist` 软件包，
否则下载一次并按公布的校验和核对。它的类别名称随数据一起走：评估表、`mnist-gan generate --class sneaker`
和浏览器里的探索页面都会用到。
"""),
    code(r"""
fashion_name, fashion = fashion_or_digits(dataset)  # MNIST_GAN_TUTORIAL_FASHION: another name or path
print(f"{len(fashion)} training images from {fashion.source}")
print("classes:", ", ".join(fashion.class_names or []))
show(("real images", as_grid_input(fashion, 64)))
"""),
    md(r"""
The same preset, the same minutes. The evaluator trains its feature classifier on this data set's own training
split (cached, as for the digits) and scores the samples against its test split; the first evaluation prints the
classifier's held-out accuracy and the **real-vs-real floor**: one half of the test split scored against the
other, what a perfect generator would read. On MNIST the default preset reaches that floor in a few minutes; on
Fashion-MNIST it stays well above it, which is why this data set still separates good methods from better ones.
""", r"""
同样的预设，同样的分钟数。评估器在这个数据集自己的训练集上训练特征分类器（和数字一样会缓存），并用它的测试集给样本打分；
第一次评估会打印分类器在留出数据上的准确率，以及**真实对真实的下限**：测试集的一半对另一半的分数，也就是完美生成器能得到的分数。
在 MNIST 上，默认预设几分钟就能达到这个下限；在 Fashion-MNIST 上它仍远高于下限，所以这个数据集还能区分好的方法和更好的方法。
"""),
    code(r"""
config = budget(preset("recommended"), minutes=MINUTES)
config.data.data = fashion_name
config.train.sample_every = 0
fashion_run = run(config, "fashion", fashion)
fashion_config, G_fashion, _ = load_generator(fashion_run.checkpoint)
fashion_scores = evaluate_generator(G_fashion, fashion_config, fashion, n=EVAL_SAMPLES, seed=0)
names = fashion.class_names or [str(c) for c in range(len(fashion_scores["class_histogram"]))]
print(f"FID {fashion_scores['fid']:.1f}, precision {fashion_scores['precision']:.3f}, "
      f"recall {fashion_scores['recall']:.3f}; share of each class:")
print(", ".join(f"{name} {100 * share:.1f}%" for name, share in zip(names, fashion_scores["class_histogram"], strict=True)))
show((f"{fashion_run.iteration} iterations", generate(G_fashion, fashion_config, 64, seed=0)),
     ("real", as_grid_input(fashion, 64)))
"""),
    md(r"""
### A folder of images

Your own images need no conversion: put them in a folder, one sub-folder per class if they have classes (the
sub-folders' names become the class names), and pass the folder as `--data`. Each file is read as 28x28 grayscale
(colour is converted, other sizes resized), and a file that is not an image, or an absurdly large one, is refused
with one line naming it. Here a folder is made from a few hundred images of each class, standing in for yours,
and a conditional model learns its classes:
""", r"""
### 一个图像文件夹

你自己的图像不需要转换：把它们放进一个文件夹，有类别就每类一个子文件夹（子文件夹的名字就是类别名），再把这个文件夹作为
`--data` 传入。每个文件都按 28x28 灰度图读取（彩色会转换，其他尺寸会缩放）；不是图像的文件或大得离谱的文件会被拒绝，
并用一行话指出是哪个文件。这里用每类几百张图像做一个文件夹，代替你的图像，再让一个条件模型学习它的类别：
"""),
    code(r"""
folder = write_image_folder(fashion, RUNS / "my_images", per_class=20 if SMALL else 500)
print(f"{folder}: " + ", ".join(f"{sub.name}/ ({len(list(sub.iterdir()))} files)" for sub in sorted(folder.iterdir())))
mine = load_dataset(DataConfig(data=str(folder)))
config = budget(preset("recommended"), minutes=2)
config.data.data = str(folder)
config.model.conditional = True  # the sub-folders are the labels
config.model.self_condition = 0
config.train.sample_every = 0
mine_run = run(config, "my-images", mine)
mine_config, G_mine, _ = load_generator(mine_run.checkpoint)
print("one column per class:", ", ".join(mine.class_names))
show(("G, one column per class", generate(G_mine, mine_config, 100, seed=0)),
     (f"only {mine.class_names[-1]}", generate(G_mine, mine_config, 100, seed=1, digit=len(mine.class_names) - 1)),
     nrow=10, size=4)
"""),
    md(r"""
## The same from the command line

```bash
mnist-gan train --preset seed --max-minutes 3 --checkpoint-every 250 --keep 1000 --out runs/seed   # parts 2-3
mnist-gan train --preset seed-relu --iterations 2000 --out runs/seed-relu                           # part 4
mnist-gan evaluate runs/seed                                                                        # the numbers
mnist-gan train --preset recommended --max-minutes 3 --out runs/rec                                 # part 5
mnist-gan train --preset recommended --conditional --max-minutes 2 --out runs/cond
mnist-gan generate runs/cond --digit 7 -n 64 --out sevens.png
mnist-gan interpolate runs/rec --rows 4 --steps 10 --out walk.gif
mnist-gan generate runs/seed -n 64 --nice --out nice.png
mnist-gan train --data fashion-mnist --max-minutes 3 --out runs/fashion                             # part 6
mnist-gan evaluate runs/fashion
mnist-gan train --data runs/tutorial/my_images --conditional --self-condition 0 --max-minutes 2 --out runs/mine
mnist-gan generate runs/mine --class sandal -n 64 --out sandals.png
```

Further reading: [docs/seed.md](../docs/seed.md) (the tutorial's model and what PyTorch changes),
[docs/guide.md](../docs/guide.md) (every command and flag), [docs/metrics.md](../docs/metrics.md) (how far to
trust the numbers), [docs/benchmarks.md](../docs/benchmarks.md) (the presets compared at equal time).
""", r"""
## 用命令行做同样的事

```bash
mnist-gan train --preset seed --max-minutes 3 --checkpoint-every 250 --keep 1000 --out runs/seed   # 第 2-3 部分
mnist-gan train --preset seed-relu --iterations 2000 --out runs/seed-relu                           # 第 4 部分
mnist-gan evaluate runs/seed                                                                        # 评估指标
mnist-gan train --preset recommended --max-minutes 3 --out runs/rec                                 # 第 5 部分
mnist-gan train --preset recommended --conditional --max-minutes 2 --out runs/cond
mnist-gan generate runs/cond --digit 7 -n 64 --out sevens.png
mnist-gan interpolate runs/rec --rows 4 --steps 10 --out walk.gif
mnist-gan generate runs/seed -n 64 --nice --out nice.png
mnist-gan train --data fashion-mnist --max-minutes 3 --out runs/fashion                             # 第 6 部分
mnist-gan evaluate runs/fashion
mnist-gan train --data runs/tutorial/my_images --conditional --self-condition 0 --max-minutes 2 --out runs/mine
mnist-gan generate runs/mine --class sandal -n 64 --out sandals.png
```

延伸阅读：[docs/seed.md](../docs/seed.md)（教程的模型，以及 PyTorch 带来的差异）、
[docs/guide.md](../docs/guide.md)（所有命令和参数）、[docs/metrics.md](../docs/metrics.md)（这些指标有多可信）、
[docs/benchmarks.md](../docs/benchmarks.md)（同样时间下各预设的比较）。
"""),
]
