"""Short, always-available explanations: every term a page shows and every stored variant.

Pure data and pure functions (no Streamlit): the pages use them for column tooltips, the
sidebar glossary and the home table's "What it is" column.
"""

from __future__ import annotations

import pandas as pd

TERMS: dict[str, str] = {
    "AUC": "area under the ROC curve: the chance that a random click is scored above a random "
           "non-click (0.5 = chance, 1 = perfect)",
    "UAUC": "user-averaged AUC: the AUC within each user who has both clicks and non-clicks, "
            "averaged over those users",
    "LogLoss": "binary cross-entropy of the predicted click probability (lower is better)",
    "ACC": "accuracy of predicting a click when the probability is at least 0.5",
    "ECE": "expected calibration error: over 10 probability bins, the sample-weighted gap "
           "between the mean prediction and the observed click rate (lower is better)",
    "Click": "a rating at or above the run's click threshold (MovieLens 4, Amazon 5)",
    "Entropy (bits)": "uncertainty of the CRM's click probability p: -p log2 p - (1-p) "
                      "log2(1-p); 0 = certain, 1 bit = p is 0.5",
    "Threshold": "CoReLLa's router: samples whose CRM entropy is above it go to the LLM",
    "LLM budget": "the share of samples the router sends to the LLM (the threshold that "
                  "sends exactly that share)",
    "Cold-start user": "fewer than 3 ratings up to the end of the train period",
    "Warm user": "3 or more ratings up to the end of the train period",
    "Long-tail item": "among the bottom 20% of items by train-period popularity",
    "Head item": "not long-tail: the top 80% of items by train-period popularity",
    "Samples": "the split's samples a method scored; LLM methods score a seeded subset "
               "(the analysed samples), as the LLM is the costly part",
    "Low confidence (⚠)": "a metric on fewer than 100 samples, or fewer than 10 clicks or "
                          "non-clicks: it moves a lot with a few samples",
    "n/a": "a metric that cannot be computed here, e.g. AUC on one label class",
    "Agreement": "the share of an item's k nearest neighbours two embedding spaces have in "
                 "common (chance level: k / number of items)",
    "Inference cost": "measured prediction time per 1,000 samples (LLM calls dominate)",
}

# Stored variants of runs made before the methods table carried descriptions.
KNOWN_VARIANTS: dict[str, str] = {
    "dcnv2": "DCNv2 (deep & cross network v2) alone: the conventional recommender, no LLM",
    "deepfm": "DeepFM alone: the conventional recommender, no LLM",
    "din": "DIN (deep interest network) alone: the conventional recommender, no LLM",
    "corella": "CoReLLa: the LLM answers where the CRM's entropy is above the threshold with "
               "the best valid AUC, the CRM elsewhere",
    "corella_budget20": "CoReLLa at a fixed LLM budget: the 20% most uncertain samples (by CRM "
                        "entropy) go to the LLM",
    "corella_crm": "CoReLLa's CRM alone (after the joint stage 2) on every analysed sample: "
                   "the 'no routing' ablation, CRM side",
    "corella_llm": "CoReLLa's LLM alone (after stages 2 and 3) on every analysed sample: the "
                   "'no routing' ablation, LLM side",
    "corella_no_align": "ablation without stage 2: the stage-1 CRM routed to an LLM trained on "
                        "its own, with no alignment to the CRM",
    "corella_llm_independent": "the independently trained LLM (no stage 2) alone on every "
                               "analysed sample",
}


def describe_methods(methods: pd.DataFrame) -> dict[str, str]:
    """Method name -> what it is: the run's stored description, else the known one, else ""."""
    stored = methods["description"] if "description" in methods else pd.Series(
        "", index=methods.index)
    out = {}
    for name, text in zip(methods["method"], stored.fillna("")):
        out[str(name)] = str(text) or KNOWN_VARIANTS.get(str(name), "")
    return out


def glossary_table(methods: pd.DataFrame | None = None) -> pd.DataFrame:
    """Term, meaning: every term, then the run's stored variants."""
    rows = list(TERMS.items())
    if methods is not None and len(methods):
        rows += [(name, text) for name, text in describe_methods(methods).items() if text]
    return pd.DataFrame(rows, columns=["term", "meaning"])
