"""Dense-Face Latent Blend Sampler in a real ComfyUI with a tiny random SD1.5-type model.

What is proven (run with ``-s`` to see the numbers):
1. before every step, for every sampler and two schedulers, the latent the model is fed
   equals, outside the mask, the original latent noised to that step's sigma (exactly, with
   fixed background noise; with fresh noise the noise is recovered and checked), and for
   k-diffusion samplers the sampler's own state is blended (seen through its callback);
2. with the final composite the output outside the mask is the input latent bit for bit;
3. batches: one mask for two latents, and one mask per latent;
4. blend_end < 1 stops blending at step floor(blend_end * steps);
5. the core mask conversion reproduces the authors' rule on their own mask PNG;
6. seeds are deterministic, inputs are not mutated, bad inputs fail naming the input.
"""
from __future__ import annotations

import importlib
import logging
import math
import time

import numpy as np
import pytest
import tiny_models as tm
import torch

SD15_SCALE = 0.18215  # SD1.x latent scale factor: ComfyUI samples x0 = 0.18215 * VAE latent
LATENT = 16  # latent side (a 128 px crop)
STEPS = 4


# ------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _fast_cpu():
    # random tiny weights: denormals make timings noisy; one thread: tiny convolutions gain nothing from
    # two, and a busy machine makes OpenMP's thread hand-offs very slow
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def mod(comfy):
    """The node module as ComfyUI loaded it (registered by nodes/__init__.py, or imported directly)."""
    return importlib.import_module("dense_face.nodes.blend_sampler")


@pytest.fixture(scope="module")
def LB(comfy):
    return importlib.import_module("dense_face.dense_face_core.latent_blend")


@pytest.fixture(scope="module")
def node(comfy, mod):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS.get("DenseFaceLatentBlendSampler")
    return cls() if cls is not None else mod.DenseFaceLatentBlendSampler()


@pytest.fixture(scope="module")
def env(comfy, tmp_path_factory):
    model = tm.tiny_model(seed=0)
    clip = tm.tiny_clip(tmp_path_factory.mktemp("blend_clip"), seed=0)
    return dict(model=model, pos=tm.encode(clip, "a close-up photo of a person"), neg=tm.encode(clip, ""))


def face_mask(size=LATENT * 8, centre=(0.5, 0.5), radius=0.3, batch=1):
    """Crop-space MASK with a soft-edged disk, 1 = regenerate."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = torch.sqrt((yy / size - centre[0]) ** 2 + (xx / size - centre[1]) ** 2)
    m = torch.clamp((radius - d) * size / 6 + 0.5, 0, 1)
    return m[None].repeat(batch, 1, 1)


def face_latent(batch=1, seed=3, side=LATENT):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, side, side, generator=g) * 5.0}


def probed(model):
    """A clone of ``model`` recording (sigma, latent fed to the model) for every model call."""
    m = model.clone()
    calls = []

    def wrapper(apply_model, args):
        x, t = args["input"], args["timestep"]
        calls.append((float(t.reshape(-1)[0]), x.detach().clone()))
        return apply_model(x, t, **args["c"])

    m.model_options["model_function_wrapper"] = wrapper
    return m, calls


def run(node, env, model=None, latent=None, mask=None, **kw):
    args = dict(seed=11, steps=STEPS, cfg=3.0, sampler_name="euler", scheduler="karras", denoise=1.0,
                mask_threshold=0.75, soft_mask=False, background_noise="fixed", blend_end=1.0,
                final_composite=False)
    args.update(kw)
    latent = face_latent() if latent is None else latent
    mask = face_mask(batch=1) if mask is None else mask
    with torch.inference_mode():
        (out,) = node.sample(model or env["model"], env["pos"], env["neg"], latent, mask, **args)
    return out


def keep_of(LB, mask, latent, threshold=0.75, soft=False):
    b, _, h, w = latent["samples"].shape
    return 1.0 - LB.broadcast_mask(LB.mask_to_latent(mask, (h, w), threshold, soft), b)


def check_schedule_calls(calls, sigmas, n_blend, x0, keep, noise_of, batch):
    """Every call at a schedule sigma sigma_j: outside the mask == x0 + sigma_j * noise_j (j < n_blend).

    Returns (blended steps seen, max error, number of calls checked).
    """
    seen, worst, checked = set(), 0.0, 0
    k = keep.bool().expand(batch, 4, *keep.shape[2:])
    for s, x in calls:
        j = next((i for i in range(len(sigmas) - 1) if math.isclose(s, sigmas[i], rel_tol=1e-4)), None)
        if j is None:
            continue
        xb = x[:batch]
        expected = x0 + sigmas[j] * noise_of(j)
        err = float((xb - expected)[k].abs().max()) if k.any() else 0.0
        if j < n_blend:
            seen.add(j)
            worst = max(worst, err / max(1.0, sigmas[j]))
            checked += 1
        else:  # not blended: the background is the sampler's own
            assert err > 1e-3, f"step {j} (sigma {s:.4f}) was blended after blend_end"
    return seen, worst, checked


SCHEDULERS = ("karras", "normal")
# k-diffusion samplers whose progress callback receives the sampler's state x (newer ones, e.g.
# ipndm, pass something else there; uni_pc keeps its state in another scaling)
STATE_IN_CALLBACK = {"euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms",
                     "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm",
                     "lcm", "ddim"}


def schedule_following_samplers(comfy):
    import comfy.samplers as cs

    own = {"dpm_fast", "dpm_adaptive"}
    return [s for s in cs.KSampler.SAMPLERS if s not in own and not s.endswith("_gpu")]


# ------------------------------------------------------------------------------------------
# 5. the core: mask at latent size, threshold polarity, the authors' rule, the blend maths
# ------------------------------------------------------------------------------------------
def test_authors_mask_rule_polarity(LB, shared_dir):
    import cv2

    png = cv2.imread(str(shared_dir / "data/official_inference_sample/mask/prompt_0_0_00.png"), cv2.IMREAD_GRAYSCALE)
    assert png is not None and png.shape == (32, 32)
    theirs_keep = png.astype(np.float64) / 255.0 >= 0.75  # INF:198-200 (the 32 -> 32 resize is the identity)
    ours_input = torch.from_numpy(1.0 - png.astype(np.float32) / 255.0)  # our MASK: 1 = regenerate
    regen = LB.mask_to_latent(ours_input[None], (32, 32), threshold=0.75)
    assert regen.shape == (1, 1, 32, 32) and set(regen.unique().tolist()) <= {0.0, 1.0}
    assert np.array_equal((1.0 - regen[0, 0]).bool().numpy(), theirs_keep)
    assert np.array_equal(LB.authors_keep_mask(png), theirs_keep)
    soft_edge = (png > 0) & (png < 255)
    print(f"\nauthors' mask: keep {theirs_keep.mean():.3f}, face (0) {(png == 0).mean():.3f}, soft edge "
          f"{soft_edge.mean():.3f} of which regenerated {(~theirs_keep[soft_edge]).mean():.3f}; ours == theirs")
    # the same mask as a 256 crop (each value an 8x8 block) area-averages back to the same rule
    crop = np.kron(1.0 - png.astype(np.float64) / 255.0, np.ones((8, 8)))
    regen256 = LB.mask_to_latent(torch.from_numpy(crop)[None], (32, 32))
    assert np.array_equal((1.0 - regen256[0, 0]).bool().numpy(), theirs_keep)
    # the threshold as the authors': 0.75 keep <=> regenerate where the averaged face mask > 0.25
    flat = LB.mask_to_latent(torch.full((1, 8, 8), 0.25), (4, 4))
    assert float(flat.max()) == 0.0  # keep value exactly 0.75 -> kept
    assert float(LB.mask_to_latent(torch.full((1, 8, 8), 0.26), (4, 4)).min()) == 1.0
    assert float(LB.mask_to_latent(torch.ones(1, 8, 8), (4, 4)).min()) == 1.0  # 1 = regenerate
    assert float(LB.mask_to_latent(torch.zeros(1, 8, 8), (4, 4)).max()) == 0.0
    soft = LB.mask_to_latent(ours_input[None], (16, 16), soft=True)
    assert 0.0 < float(soft[(soft > 0) & (soft < 1)].numel())


def test_area_resize_matches_opencv_inter_area(LB):
    import cv2

    rng = np.random.default_rng(0)
    for src, dst in ((256, 32), (512, 64), (100, 32), (77, 16), (32, 32)):
        img = rng.random((src, src + 8))
        ours = LB.area_resize(img[None], (dst, dst + 1))[0]
        ref = cv2.resize(img, (dst + 1, dst), interpolation=cv2.INTER_AREA)
        err = float(np.abs(ours - ref).max())
        print(f"area resize {src}x{src + 8} -> {dst}x{dst + 1}: max |ours - cv2 INTER_AREA| = {err:.2e}")
        assert err < 1e-6


def test_blend_step_maths(LB, env):
    g = torch.Generator().manual_seed(0)
    x, x0, n = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    regen = torch.zeros(1, 1, 8, 8)
    regen[..., 2:6, 2:6] = 1
    sigma = torch.tensor([3.5, 3.5])
    out = LB.blend_step(x, x0, n, sigma, regen)
    keep = regen.expand(2, 4, 8, 8) == 0
    assert torch.equal(out[~keep], x[~keep])  # regenerated: the current latent, bit for bit
    assert torch.equal(out[keep], (x0 + 3.5 * n)[keep])  # kept: x0 + sigma * noise, bit for bit
    # ComfyUI's own noise_scaling of the SD1.5-type model is the same EPS formula
    ms = env["model"].model.model_sampling
    via_comfy = LB.blend_step(x, x0, n, sigma.reshape(2, 1, 1, 1), regen, noise_scaling=ms.noise_scaling)
    assert torch.allclose(via_comfy, out, atol=1e-6)
    # and equals the authors' q_sample(x0, t) = sqrt(a) x0 + sqrt(1-a) n, scaled to ComfyUI's space
    t = 981  # the authors' first DDIM timestep; their schedule: betas = linspace(sqrt(8.5e-4), sqrt(0.012))**2
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    a = float(torch.cumprod(1.0 - betas, 0)[t])
    s = LB.sigma_from_alpha_cumprod(a)
    assert math.isclose(s, float(ms.sigmas[t]), rel_tol=1e-4)
    q = math.sqrt(a) * x0 + math.sqrt(1 - a) * n
    assert torch.allclose(LB.ddpm_to_sampling_space(q, a), LB.eps_noise_scaling(s, n, x0), atol=1e-4)
    soft = LB.blend_step(x, x0, n, 2.0, torch.full((1, 1, 8, 8), 0.25))
    assert torch.allclose(soft, 0.25 * x + 0.75 * (x0 + 2.0 * n), atol=1e-6)


def test_core_mask_errors_and_broadcast(LB):
    r = LB.mask_to_latent(torch.ones(1, 16, 16), (4, 4))
    assert LB.broadcast_mask(r, 3).shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="mask: batch of 2 masks does not match the latent batch of 3"):
        LB.broadcast_mask(torch.ones(2, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="mask: contains NaN"):
        LB.mask_to_latent(torch.tensor([[[float("nan")]]]), (4, 4))
    with pytest.raises(ValueError, match="0-255"):
        LB.mask_to_latent(torch.full((1, 8, 8), 255.0), (4, 4))
    with pytest.raises(ValueError, match="mask_threshold"):
        LB.mask_to_latent(torch.ones(1, 8, 8), (4, 4), threshold=1.5)
    assert LB.blended_step_count(10, 1.0) == 10 and LB.blended_step_count(10, 0.5) == 5
    assert LB.blended_step_count(6, 0.5) == 3 and LB.blended_step_count(7, 0.0) == 0
    assert LB.blended_step_count(3, 0.7) == 2  # 2.1 -> the first 2 steps
    sig = [14.6, 3.2, 0.45, 0.03, 0.0]
    assert LB.schedule_index(3.2, sig) == 1 and LB.schedule_index(0.0, sig) is None
    assert LB.schedule_index(1.0, sig) is None
    assert LB.interval_index(1.0, sig) == 1 and LB.interval_index(20.0, sig) == 0
    assert LB.interval_index(0.01, sig) == 3
    n0, n1 = LB.step_noise((1, 4, 4, 4), 5, 0), LB.step_noise((1, 4, 4, 4), 5, 1)
    assert torch.equal(n0, LB.step_noise((1, 4, 4, 4), 5, 0)) and not torch.equal(n0, n1)


# ------------------------------------------------------------------------------------------
# 1. every step of every sampler: the latent fed to the model outside the mask
# ------------------------------------------------------------------------------------------
def test_schedule_equals_stock_ksampler(comfy, mod, env):
    import comfy.samplers as cs

    model = env["model"]
    for sampler, scheduler, denoise in (("euler", "karras", 1.0), ("dpm_2", "normal", 1.0),
                                        ("uni_pc", "karras", 0.6), ("ddpm", "ddim_uniform", 1.0)):
        ours = mod.schedule_sigmas(model, 5, sampler, scheduler, denoise)
        target = model if hasattr(model, "get_model_object") else model.model
        stock = cs.KSampler(target, steps=5, device="cpu", sampler=sampler, scheduler=scheduler,
                            denoise=denoise).sigmas
        assert torch.equal(ours, stock.float().cpu()), (sampler, scheduler, denoise)
    ddim_t = mod.schedule_sigmas(model, 50, "ddpm", "ddim_uniform", 1.0)
    ms = model.model.model_sampling
    assert math.isclose(float(ddim_t[0]), float(ms.sigmas[981]), rel_tol=1e-5)  # the authors' t = 981 .. 1
    assert math.isclose(float(ddim_t[-2]), float(ms.sigmas[1]), rel_tol=1e-5) and len(ddim_t) == 51


def test_every_step_every_sampler_fixed_noise(comfy, mod, node, env, LB, monkeypatch):
    """Fixed background noise: the expected latent is exact, x0 + sigma_j * (KSampler's noise)."""
    import comfy.sample

    latent, mask = face_latent(), face_mask()
    x0 = SD15_SCALE * latent["samples"]
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    keep = keep_of(LB, mask, latent)
    states = []
    real_progress = mod._progress_callback

    def progress(model, steps):  # ComfyUI's callback, also recording the sampler's state x per step
        cb = real_progress(model, steps)

        def recorder(step, x0_pred, x, total):
            states.append((step, x.detach().clone()))
            return cb(step, x0_pred, x, total)
        return recorder

    monkeypatch.setattr(mod, "_progress_callback", progress)
    rows, t_all = [], time.time()
    for sampler in schedule_following_samplers(comfy):
        for scheduler in SCHEDULERS:
            model, calls = probed(env["model"])
            states.clear()
            t = time.time()
            out = run(node, env, model=model, latent=latent, mask=mask, sampler_name=sampler, scheduler=scheduler)
            dt = time.time() - t
            sigmas = [float(s) for s in mod.schedule_sigmas(model, STEPS, sampler, scheduler, 1.0)]
            n = len(sigmas) - 1
            seen, worst, checked = check_schedule_calls(calls, sigmas, n, x0, keep, lambda j: noise, 1)
            assert seen == set(range(n)), f"{sampler}/{scheduler}: blended steps {sorted(seen)} of {n}"
            assert worst < 1e-5, f"{sampler}/{scheduler}: background error {worst}"
            assert torch.isfinite(out["samples"]).all()
            # the regenerated region is the sampler's own, not the noised original
            face = ~keep.bool().expand_as(x0)
            first_late = next(x for s, x in calls if math.isclose(s, sigmas[n - 1], rel_tol=1e-4))
            assert float((first_late[:1] - (x0 + sigmas[n - 1] * noise))[face].abs().max()) > 1e-3
            # k-diffusion samplers hand their callback the state: it was blended itself
            state_ok = "-"
            assert [s for s, _ in states] == list(range(n)), f"{sampler}: progress steps {[s for s, _ in states]}"
            if sampler in STATE_IN_CALLBACK:
                k = keep.bool().expand_as(x0)
                errs = [float((x - (x0 + sigmas[i] * noise))[k].abs().max()) / max(1, sigmas[i]) for i, x in states]
                state_ok = f"{max(errs):.1e}"
                assert max(errs) < 1e-5, f"{sampler}/{scheduler}: sampler state not blended: {errs}"
            rows.append(f"{sampler:>22s} {scheduler:>7s}: {len(calls):2d} model calls, {checked:2d} at schedule "
                        f"sigmas all blended (max err {worst:.1e}), state err {state_ok}, {dt:.2f}s")
    print("\n" + "\n".join(rows) + f"\nall samplers: {time.time() - t_all:.1f}s")


def test_fresh_noise_every_step(comfy, mod, node, env, LB):
    """Fresh background noise: recover n_j = (x_bg - x0) / sigma_j; it is N(0,1), new each step."""
    import comfy.sample

    latent, mask = face_latent(), face_mask()
    x0 = SD15_SCALE * latent["samples"]
    keep = keep_of(LB, mask, latent).bool().expand_as(x0)
    initial = comfy.sample.prepare_noise(latent["samples"], 11)
    for sampler in ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde", "ddpm"):
        model, calls = probed(env["model"])
        run(node, env, model=model, latent=latent, mask=mask, sampler_name=sampler, scheduler="karras",
            background_noise="fresh", steps=5)
        sigmas = [float(s) for s in mod.schedule_sigmas(model, 5, sampler, "karras", 1.0)]
        recovered = {}
        for s, x in calls:
            j = next((i for i in range(len(sigmas) - 1) if math.isclose(s, sigmas[i], rel_tol=1e-4)), None)
            if j is None:
                continue
            n_j = ((x[:1] - x0) / sigmas[j])[keep]
            if j in recovered:  # a second call at the same sigma (heun's corrector) uses the same noise
                assert torch.allclose(recovered[j], n_j, atol=1e-4)
            recovered[j] = n_j
        assert sorted(recovered) == list(range(len(sigmas) - 1))
        stats = []
        for j, n_j in recovered.items():
            expected = LB.step_noise(x0.shape, 11, j)[keep]
            assert torch.allclose(n_j, expected, atol=1e-4 * max(1, 1 / sigmas[j])), f"{sampler}: step {j}"
            assert abs(float(n_j.mean())) < 0.15 and 0.85 < float(n_j.std()) < 1.15
            stats.append(f"{float(n_j.std()):.2f}")
        corr = max(abs(float(torch.corrcoef(torch.stack([recovered[a], recovered[b]]))[0, 1]))
                   for a in recovered for b in recovered if a < b)
        corr0 = max(abs(float(torch.corrcoef(torch.stack([recovered[a], initial[keep]]))[0, 1])) for a in recovered)
        assert corr < 0.2 and corr0 < 0.2
        print(f"\n{sampler:>16s}: fresh background noise per step, std {stats} over {int(keep.sum())} values, "
              f"max |corr| between steps {corr:.3f}, with the starting noise {corr0:.3f}", end="")
    print()


def test_own_step_samplers_blend_every_evaluation(comfy, mod, node, env, LB):
    import comfy.samplers as cs

    latent, mask = face_latent(), face_mask()
    x0 = SD15_SCALE * latent["samples"]
    keep = keep_of(LB, mask, latent).bool().expand_as(x0)
    for sampler in [s for s in ("dpm_fast", "dpm_adaptive") if s in cs.KSampler.SAMPLERS]:
        model, calls = probed(env["model"])
        t = time.time()
        out = run(node, env, model=model, latent=latent, mask=mask, sampler_name=sampler, background_noise="fresh")
        sigmas = [float(s) for s in mod.schedule_sigmas(model, STEPS, sampler, "karras", 1.0)]
        steps_hit = set()
        for s, x in calls:
            j = LB.interval_index(s, sigmas)
            steps_hit.add(j)
            expected = x0 + s * LB.step_noise(x0.shape, 11, j)
            assert float((x[:1] - expected)[keep].abs().max()) < 1e-5 * max(1, s)
        assert torch.isfinite(out["samples"]).all() and 0 in steps_hit
        print(f"\n{sampler}: {len(calls)} evaluations, each blended at its own sigma; schedule intervals "
              f"{sorted(steps_hit)}; {time.time() - t:.2f}s", end="")
    print()


def test_denoise_below_one_starts_later_and_blends(mod, node, env, LB):
    import comfy.sample

    latent, mask = face_latent(), face_mask()
    model, calls = probed(env["model"])
    run(node, env, model=model, latent=latent, mask=mask, denoise=0.5, sampler_name="dpmpp_2m")
    sigmas = [float(s) for s in mod.schedule_sigmas(model, STEPS, "dpmpp_2m", "karras", 0.5)]
    assert len(sigmas) == STEPS + 1 and sigmas[0] < 14.0 and math.isclose(calls[0][0], sigmas[0], rel_tol=1e-5)
    x0 = SD15_SCALE * latent["samples"]
    seen, worst, _ = check_schedule_calls(calls, sigmas, STEPS, x0, keep_of(LB, mask, latent),
                                          lambda j: comfy.sample.prepare_noise(latent["samples"], 11), 1)
    assert seen == set(range(STEPS)) and worst < 1e-5
    out = run(node, env, latent=latent, mask=mask, denoise=0.0)
    assert torch.equal(out["samples"], latent["samples"])
    print(f"\ndenoise 0.5: sigmas {[round(s, 3) for s in sigmas]}, all {STEPS} steps blended; denoise 0: input back")


# ------------------------------------------------------------------------------------------
# 2. final composite; 4. blend_end
# ------------------------------------------------------------------------------------------
def test_final_composite_restores_background_exactly(node, env, LB):
    latent, mask = face_latent(), face_mask()
    before = latent["samples"].clone()
    keep = keep_of(LB, mask, latent).bool().expand_as(before)
    for sampler, blend_end, noise_mode in (("euler", 1.0, "fresh"), ("dpmpp_2m", 0.5, "fixed"),
                                           ("heun", 1.0, "fixed")):
        plain = run(node, env, latent=latent, mask=mask, sampler_name=sampler, blend_end=blend_end,
                    background_noise=noise_mode)["samples"]
        comp = run(node, env, latent=latent, mask=mask, sampler_name=sampler, blend_end=blend_end,
                   background_noise=noise_mode, final_composite=True)["samples"]
        assert torch.equal(comp[keep], before[keep])  # bit for bit
        assert torch.equal(comp[~keep], plain[~keep])  # the face is the sampler's
        assert float((comp[~keep] - before[~keep]).abs().mean()) > 1e-2
        print(f"\n{sampler} blend_end {blend_end} {noise_mode}: with composite the background == input exactly; "
              f"without it |out - in| on the background: mean {float((plain - before)[keep].abs().mean()):.3f} "
              f"(random-weight model); face changed by {float((comp - before)[~keep].abs().mean()):.3f}", end="")
    assert torch.equal(latent["samples"], before)
    print()


def test_blend_end_stops_at_the_right_step(comfy, mod, node, env, LB):
    import comfy.sample

    latent, mask = face_latent(), face_mask()
    x0 = SD15_SCALE * latent["samples"]
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    keep = keep_of(LB, mask, latent)
    for sampler, steps, blend_end, expected in (("euler", 6, 0.5, 3), ("dpmpp_2m", 6, 0.5, 3),
                                                ("heun", 5, 0.7, 3), ("euler_ancestral", 4, 0.0, 0),
                                                ("euler", 4, 0.99, 3)):
        model, calls = probed(env["model"])
        run(node, env, model=model, latent=latent, mask=mask, sampler_name=sampler, steps=steps, blend_end=blend_end)
        sigmas = [float(s) for s in mod.schedule_sigmas(model, steps, sampler, "karras", 1.0)]
        # check_schedule_calls also asserts that calls at steps >= n_blend are NOT blended
        seen, worst, _ = check_schedule_calls(calls, sigmas, expected, x0, keep, lambda j: noise, 1)
        assert seen == set(range(expected)) and worst < 1e-5
        print(f"\n{sampler} steps {steps} blend_end {blend_end}: blended steps {sorted(seen)}, "
              f"unblended {list(range(expected, steps))}", end="")
    print()


# ------------------------------------------------------------------------------------------
# 3. batches
# ------------------------------------------------------------------------------------------
def test_batches_one_mask_and_per_item_masks(comfy, mod, node, env, LB):
    import comfy.sample

    latent = face_latent(batch=2, seed=4)
    x0 = SD15_SCALE * latent["samples"]
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    one = face_mask(batch=1)
    two = torch.cat([face_mask(centre=(0.4, 0.4), radius=0.2), face_mask(centre=(0.6, 0.55), radius=0.35)])
    for label, mask in (("one mask for 2 latents", one), ("one mask per latent", two)):
        for sampler in ("euler_ancestral", "heun"):
            model, calls = probed(env["model"])
            out = run(node, env, model=model, latent=latent, mask=mask, sampler_name=sampler, final_composite=True)
            keep = keep_of(LB, mask, latent)
            assert keep.shape == (2, 1, LATENT, LATENT)
            sigmas = [float(s) for s in mod.schedule_sigmas(model, STEPS, sampler, "karras", 1.0)]
            seen, worst, _ = check_schedule_calls(calls, sigmas, STEPS, x0, keep, lambda j: noise, 2)
            assert seen == set(range(STEPS)) and worst < 1e-5
            k = keep.bool().expand_as(x0)
            assert torch.equal(out["samples"][k], latent["samples"][k])
        kept = [float(keep[i].mean()) for i in range(2)]
        print(f"\n{label}: kept fractions {kept[0]:.2f} / {kept[1]:.2f}, every step blended per item", end="")
    assert not torch.equal(keep_of(LB, two, latent)[0], keep_of(LB, two, latent)[1])
    print()


# ------------------------------------------------------------------------------------------
# 6. determinism, isolation, interrupts, bad inputs
# ------------------------------------------------------------------------------------------
def test_seed_determinism_and_no_mutation(node, env):
    latent, mask = face_latent(), face_mask()
    before_latent, before_mask = latent["samples"].clone(), mask.clone()
    options_before = dict(env["model"].model_options)
    a = run(node, env, latent=latent, mask=mask, sampler_name="dpmpp_2m_sde", background_noise="fresh")["samples"]
    b = run(node, env, latent=latent, mask=mask, sampler_name="dpmpp_2m_sde", background_noise="fresh")["samples"]
    c = run(node, env, latent=latent, mask=mask, sampler_name="dpmpp_2m_sde", background_noise="fresh",
            seed=12)["samples"]
    d = run(node, env, latent=latent, mask=mask, sampler_name="dpmpp_2m_sde", background_noise="fixed")["samples"]
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3 and float((a - d).abs().max()) > 1e-3
    assert torch.equal(latent["samples"], before_latent) and torch.equal(mask, before_mask)
    assert dict(env["model"].model_options) == options_before and not env["model"].patches
    # also outside inference_mode (grad mode off only), as a script would call it
    with torch.no_grad():
        (e,) = node.sample(env["model"], env["pos"], env["neg"], latent, mask, 11, STEPS, 3.0, "dpmpp_2m_sde",
                           "karras", 1.0, 0.75, False, "fresh", 1.0, False)
    assert torch.equal(e["samples"], a)
    print(f"\nsame seed: identical; seed 12 differs by {float((a - c).abs().max()):.3f}; fixed vs fresh "
          f"{float((a - d).abs().max()):.3f}; input latent, mask and model untouched")


def test_interrupt_is_honoured(node, env):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(node, env)
    finally:
        mm.interrupt_current_processing(False)


def test_bad_inputs_name_the_input(node, env, caplog):
    ok = face_latent(batch=2)
    with pytest.raises(ValueError, match="mask: batch of 3 masks does not match the latent batch of 2"):
        run(node, env, latent=ok, mask=face_mask(batch=3))
    nan = face_latent()
    nan["samples"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latent_image: contains NaN"):
        run(node, env, latent=nan)
    with pytest.raises(ValueError, match="latent_image: has 16 channels but the model expects 4"):
        run(node, env, latent={"samples": torch.randn(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="latent_image: expected an image latent"):
        run(node, env, latent={"samples": torch.randn(1, 4, 2, 8, 8)})
    with pytest.raises(ValueError, match="latent_image: expected a LATENT"):
        run(node, env, latent=torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="mask: values must lie in"):
        run(node, env, mask=face_mask() * 255)
    with pytest.raises(ValueError, match="mask: contains NaN"):
        run(node, env, mask=torch.full((1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="sampler_name: unknown value 'no_such'"):
        run(node, env, sampler_name="no_such")
    with pytest.raises(ValueError, match="background_noise"):
        run(node, env, background_noise="sometimes")
    with pytest.raises(ValueError, match="blend_end"):
        run(node, env, blend_end=1.5)
    latent = face_latent()
    with caplog.at_level(logging.WARNING, logger="dense_face"):
        out = run(node, env, latent=latent, mask=torch.zeros(1, 64, 64), final_composite=True)
    assert "mask is empty" in caplog.text
    assert torch.equal(out["samples"], latent["samples"])  # nothing regenerated, composite gives the input back
    noisy = dict(face_latent(), noise_mask=torch.ones(1, 16, 16))
    with caplog.at_level(logging.WARNING, logger="dense_face"):
        run(node, env, latent=noisy)
    assert "noise_mask is ignored" in caplog.text


def test_node_interface(mod, node):
    import comfy.samplers as cs

    spec = mod.DenseFaceLatentBlendSampler.INPUT_TYPES()["required"]
    assert list(spec) == ["model", "positive", "negative", "latent_image", "mask", "seed", "steps", "cfg",
                          "sampler_name", "scheduler", "denoise", "mask_threshold", "soft_mask",
                          "background_noise", "blend_end", "final_composite"]
    assert spec["sampler_name"][0] == list(cs.KSampler.SAMPLERS)
    assert spec["scheduler"][0] == list(cs.KSampler.SCHEDULERS)
    defaults = {k: v[1].get("default") for k, v in spec.items() if len(v) > 1 and "default" in v[1]}
    assert defaults["denoise"] == 1.0 and defaults["mask_threshold"] == 0.75 and defaults["soft_mask"] is False
    assert defaults["background_noise"] == "fresh" and defaults["blend_end"] == 1.0
    assert defaults["final_composite"] is False
    assert all("tooltip" in v[1] for v in spec.values())
    assert mod.NODE_CLASS_MAPPINGS == {"DenseFaceLatentBlendSampler": mod.DenseFaceLatentBlendSampler}
    assert mod.NODE_DISPLAY_NAME_MAPPINGS["DenseFaceLatentBlendSampler"] == "Dense-Face Latent Blend Sampler"
    assert mod.DenseFaceLatentBlendSampler.RETURN_TYPES == ("LATENT",)


def test_soft_mask_and_authors_mask_through_the_node(mod, node, env, LB, shared_dir):
    """The authors' 32x32 mask, given as a 256 crop MASK, drives a 32x32 latent as their rule says."""
    import comfy.sample
    import cv2

    png = cv2.imread(str(shared_dir / "data/official_inference_sample/mask/prompt_0_0_00.png"), cv2.IMREAD_GRAYSCALE)
    crop_mask = torch.from_numpy(np.kron(1.0 - png.astype(np.float32) / 255.0, np.ones((8, 8), np.float32)))[None]
    latent = face_latent(side=32)
    x0 = SD15_SCALE * latent["samples"]
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    keep = torch.from_numpy(png.astype(np.float64) / 255.0 >= 0.75)[None, None].float()
    model, calls = probed(env["model"])
    run(node, env, model=model, latent=latent, mask=crop_mask, steps=2, sampler_name="ddpm", scheduler="ddim_uniform")
    sigmas = [float(s) for s in mod.schedule_sigmas(model, 2, "ddpm", "ddim_uniform", 1.0)]
    seen, worst, _ = check_schedule_calls(calls, sigmas, 2, x0, keep, lambda j: noise, 1)
    assert seen == {0, 1} and worst < 1e-5
    # soft mask: partly-face latent pixels mix the sampler's latent and the noised original
    model, calls = probed(env["model"])
    run(node, env, model=model, latent=latent, mask=crop_mask, steps=2, sampler_name="euler", soft_mask=True)
    regen = LB.mask_to_latent(crop_mask, (32, 32), soft=True)
    _, x_in = calls[0]
    sig = [float(s) for s in mod.schedule_sigmas(model, 2, "euler", "karras", 1.0)]
    start = x0 + math.sqrt(1 + sig[0] ** 2) * noise  # ComfyUI's start at sigma_max (karras): sqrt(1 + s^2)
    expected = regen * start + (1 - regen) * (x0 + sig[0] * noise)
    assert torch.allclose(x_in[:1], expected, atol=1e-4)
    partial = ((regen > 0) & (regen < 1)).float().mean()
    print(f"\nauthors' mask through the node: latent keep {float(keep.mean()):.3f}, both steps blended; "
          f"soft mode: {float(partial):.3f} of the latent partly blended")
