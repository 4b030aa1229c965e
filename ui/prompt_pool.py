"""The Prompt pool page's data shaping and figures (pure pandas and plotly).

CoCo stores, per analysed sample, the prompts its user selected (ids, cosines, weights), how
much of the fusion's attention went to the LLM's vectors, p_crm and p_coco (`prompt_usage`);
per prompt its usage, nearest vocabulary tokens, AUCs over the users it serves first and its
cosine to every other prompt (`prompt_pool`); per user the top prompt and a 2-D map of the
space prompts are chosen in (`prompt_users`). The page asks: does the pool specialise, whom
does each prompt serve, and where does the LLM's knowledge help the CRM?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui import variants
from ui.collab import SEGMENT_NAMES
from ui.figures import rolling_lines, styled

FEW = 20  # fewer test samples than this: a prompt's AUCs are flagged, not compared
SPLIT_SHARES = {"share_train": "train", "share_valid": "valid", "share_test": "test"}


def coco_methods(usage: pd.DataFrame) -> list[str]:
    return sorted(usage["method"].unique()) if "method" in usage else []


def variant_order(metrics: pd.DataFrame, method: str) -> list[str]:
    """crm, the ablations, the K sweep (by K), then CoCo."""
    names = set(metrics["method"])
    sweep = sorted((n.removeprefix(f"{method}_") for n in names
                    if n.startswith(f"{method}_k") and n.removeprefix(f"{method}_k").isdigit()),
                   key=lambda k: int(k[1:]))
    return ["crm", "shared_only", "mean_pool", "no_elimination", *sweep, "coco"]


def variant_table(metrics: pd.DataFrame, method: str, metric: str = "auc") -> pd.DataFrame:
    return variants.variant_table(metrics, method, variant_order(metrics, method), "coco",
                                  metric)


def variants_figure(rows: pd.DataFrame, segments: list[str]) -> go.Figure:
    return variants.variants_figure(rows, segments, "CoCo, its CRM and ablations per segment "
                                    "(test)")


def with_segments(usage: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The usage rows with item, segment, whether CoCo's loss beat the CRM's (the mask of
    contradiction elimination, at evaluation) and the move of the probability."""
    out = usage.merge(samples[["sample_id", "item", "cold_user", "long_tail_item"]],
                      on="sample_id", how="left")
    out["segment"] = [SEGMENT_NAMES[(bool(c), bool(t))] if c == c and t == t else "unknown"
                      for c, t in zip(out["cold_user"], out["long_tail_item"])]
    out["helped"] = bce(out["label"], out["p_coco"]) < bce(out["label"], out["p_crm"])
    out["move"] = out["p_coco"] - out["p_crm"]
    return out


def bce(labels: pd.Series, probs: pd.Series) -> np.ndarray:
    p = np.clip(probs.to_numpy(float), 1e-7, 1 - 1e-7)
    y = labels.to_numpy(float)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def usage_long(pool: pd.DataFrame) -> pd.DataFrame:
    """Per prompt and split: the share of samples whose selection includes the prompt."""
    rows = pool.melt(id_vars=["prompt"], value_vars=[c for c in SPLIT_SHARES if c in pool],
                     var_name="split", value_name="share")
    rows["split"] = rows["split"].map(SPLIT_SHARES)
    return rows


def cosine_matrix(pool: pd.DataFrame) -> pd.DataFrame:
    columns = sorted((c for c in pool if c.startswith("cos_")), key=lambda c: int(c[4:]))
    return pd.DataFrame(pool[columns].to_numpy(), index=pool["prompt"].to_numpy(),
                        columns=[int(c[4:]) for c in columns])


def off_diagonal(matrix: pd.DataFrame) -> np.ndarray:
    values = matrix.to_numpy()
    return values[~np.eye(len(values), dtype=bool)] if len(values) > 1 else np.zeros(0)


def auc_gain(pool: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: test samples it serves first, the CRM's and CoCo's AUC over them and the
    gain; `reliable` is False with fewer than FEW samples or one class (AUC undefined)."""
    out = pool[["prompt", "n_test", "auc_crm", "auc_coco", "nearest_tokens"]].copy()
    out["gain"] = out["auc_coco"] - out["auc_crm"]
    out["reliable"] = (out["n_test"] >= FEW) & out["gain"].notna()
    return out


def mask_curves(log: pd.DataFrame) -> pd.DataFrame:
    """The share of samples the LLM helped (its gradient stopped), per step and stage."""
    rows = log[log["metric"] == "mask_rate"]
    return (rows.rename(columns={"stage": "stage", "epoch": "step"})
            [["stage", "step", "value"]].reset_index(drop=True))


def mask_by_segment(log: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The mask rate per step of one training stage, by segment of the batch's samples
    (step, segment, value); empty for runs stored before it was logged."""
    rows = log[(log["stage"] == stage) & log["metric"].str.startswith("mask_rate:")]
    return pd.DataFrame({"step": rows["epoch"].to_numpy(),
                         "segment": rows["metric"].str.removeprefix("mask_rate:").to_numpy(),
                         "value": rows["value"].to_numpy()})


def mask_segment_figure(curves: pd.DataFrame, stage: str) -> go.Figure:
    fig = rolling_lines(curves, "segment", 4, digits=3)
    fig.update_yaxes(range=[0, 1])
    return styled(fig, f"Mask rate by segment over training ({stage}), rolling mean of 4 "
                       "steps", "step", "mask rate")


def codebook_log(log: pd.DataFrame, method_key: str = "coco") -> dict[str, float]:
    """The last perplexity and dead-code count of the headline's prompt phase, and the last
    values of L_Q and L_ortho."""
    stage = log[log["stage"] == f"{method_key}:prompts"]
    out = {}
    for metric in ("perplexity", "dead_codes", "l_q", "l_ortho"):
        values = stage.loc[stage["metric"] == metric, "value"]
        out[metric] = float(values.iloc[-1]) if len(values) else float("nan")
    return out


def helped_by_segment(frame: pd.DataFrame) -> pd.DataFrame:
    """Per segment (test): samples, the share CoCo predicts better than its CRM, the mean
    move of P(click) and the LLM's share of the fusion's attention."""
    test = frame[frame["split"] == "test"]
    rows = []
    for segment, group in test.groupby("segment"):
        rows.append({"segment": segment, "samples": len(group),
                     "helped": float(group["helped"].mean()),
                     "abs_move": float(group["move"].abs().mean()),
                     "llm_share": float(group["llm_share"].mean())})
    return pd.DataFrame(rows, columns=["segment", "samples", "helped", "abs_move",
                                       "llm_share"])


def sample_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The sample browser: the largest moves of P(click) first."""
    out = frame.assign(_key=frame["move"].abs()).sort_values("_key", ascending=False)
    columns = ["sample_id", "split", "user", "item", "label", "p_crm", "p_coco", "move",
               "prompt_ids", "n_selected", "top_cosine", "llm_share", "segment"]
    return out[[c for c in columns if c in out]].reset_index(drop=True)


def case_prompts(row: pd.Series, pool: pd.DataFrame) -> pd.DataFrame:
    """One sample's selected prompts: id, cosine, weight, and what each prompt is near."""
    ids = [int(i) for i in str(row["prompt_ids"]).split(",") if i != ""]
    cosines = [float(c) for c in str(row["prompt_cosines"]).split(",") if c != ""]
    weights = [float(w) for w in str(row["prompt_weights"]).split(",") if w != ""]
    near = pool.set_index("prompt")["nearest_tokens"] if len(pool) else pd.Series(dtype=str)
    return pd.DataFrame({"prompt": ids, "cosine": cosines, "weight": weights,
                         "nearest_tokens": [near.get(i, "") for i in ids]})


# --- figures ---------------------------------------------------------------------------------

def usage_figure(rows: pd.DataFrame) -> go.Figure:
    fig = px.bar(rows, x="prompt", y="share", color="split", barmode="group",
                 category_orders={"split": ["train", "valid", "test"]})
    fig.update_xaxes(dtick=1)
    return styled(fig, "Prompt usage: share of samples whose user selects each prompt",
                  "prompt", "share of samples")


def cosine_figure(matrix: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=matrix.columns, y=matrix.index,
                               zmin=-1, zmax=1, colorscale="RdBu_r",
                               hovertemplate="prompts %{y} and %{x}: cos %{z:.3f}"
                                             "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_xaxes(dtick=1)
    return styled(fig, "Cosine between prompts (L_ortho pushes the off-diagonal to 0)",
                  "prompt", "prompt", legend=False)


def users_figure(users: pd.DataFrame, sample: int = 5000, seed: int = 0) -> go.Figure:
    shown = users.sample(sample, random_state=seed) if len(users) > sample else users
    shown = shown.assign(top=shown["top_prompt"].astype(str))
    order = sorted(shown["top"].unique(), key=int)
    fig = px.scatter(shown, x="x", y="y", color="top", category_orders={"top": order},
                     hover_data={"user": True, "top_cosine": ":.3f", "n_selected": True,
                                 "x": False, "y": False, "top": False})
    fig.update_traces(marker={"size": 6, "opacity": 0.8})
    fig.update_layout(legend_title_text="top prompt")
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return styled(fig, "Users in the space prompts are chosen in (UMAP), by top prompt",
                  "", "")


def gain_figure(gain: pd.DataFrame) -> go.Figure:
    shown = gain.dropna(subset=["gain"])
    colours = np.where(shown["reliable"], np.where(shown["gain"] >= 0, "#54A24B", "#E45756"),
                       "#BBBBBB")
    fig = go.Figure(go.Bar(x=shown["prompt"].astype(str), y=shown["gain"],
                           marker_color=colours,
                           customdata=np.stack([shown["n_test"], shown["auc_crm"],
                                                shown["auc_coco"]], axis=1)
                           if len(shown) else None,
                           hovertemplate="prompt %{x}: %{y:+.4f}<br>n=%{customdata[0]:,}, "
                                         "CRM %{customdata[1]:.4f}, CoCo %{customdata[2]:.4f}"
                                         "<extra></extra>"))
    return styled(fig, f"AUC gain over the CRM per prompt (test samples it serves first; grey: "
                  f"fewer than {FEW})", "prompt", "AUC CoCo - CRM", legend=False)


def mask_figure(curves: pd.DataFrame) -> go.Figure:
    fig = rolling_lines(curves, "stage", 4, digits=3)
    fig.update_yaxes(range=[0, 1])
    return styled(fig, "Share of samples the LLM helped (gradient stopped in the LoRA phase), "
                  "rolling mean of 4 steps", "step", "mask rate")


def helped_figure(table: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=table["segment"], y=table["helped"], marker_color="#72B7B2",
                           customdata=np.stack([table["samples"], table["llm_share"]], axis=1)
                           if len(table) else None,
                           hovertemplate="%{x}: %{y:.3f}<br>%{customdata[0]:,} samples<br>"
                                         "LLM attention share %{customdata[1]:.3f}"
                                         "<extra></extra>"))
    fig.update_yaxes(range=[0, 1])
    return styled(fig, "Where CoCo predicts better than its CRM (test, by segment)", "",
                  "share of samples", legend=False)
