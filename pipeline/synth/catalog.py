"""Vocabularies of the synthetic marketplace: functions and their titles, industries, seniority, regions, skills.

Everything here is a pure function of the seed, so two runs with one seed build the same catalog. Values are
lower-case slugs (docs/architecture.md, "Raw inputs"); titles are lower-case words separated by spaces so the
feature code's word tokenizer splits them into title terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ~20 job functions, each with base titles (tokens shared within a function make title cosines informative).
FUNCTION_TITLES: dict[str, tuple[str, ...]] = {
    "engineering": ("software engineer", "backend engineer", "frontend developer", "platform engineer",
                    "site reliability engineer", "mobile developer"),
    "data": ("data scientist", "data engineer", "data analyst", "machine learning engineer",
             "analytics engineer"),
    "product": ("product manager", "product owner", "technical product manager", "product analyst"),
    "design": ("product designer", "ux designer", "graphic designer", "ux researcher"),
    "sales": ("account executive", "sales representative", "sales manager", "business development manager",
              "inside sales representative"),
    "marketing": ("marketing manager", "content marketing specialist", "growth marketer", "seo specialist",
                  "brand manager"),
    "finance": ("financial analyst", "accountant", "controller", "finance manager", "auditor"),
    "hr": ("recruiter", "hr generalist", "talent acquisition partner", "hr business partner"),
    "operations": ("operations manager", "operations analyst", "logistics coordinator",
                   "supply chain analyst"),
    "support": ("customer support specialist", "customer success manager", "technical support engineer",
                "help desk technician"),
    "legal": ("corporate counsel", "paralegal", "compliance officer", "contract manager"),
    "healthcare": ("registered nurse", "medical assistant", "clinical research coordinator", "pharmacist",
                   "physical therapist"),
    "education": ("teacher", "instructional designer", "academic advisor", "curriculum developer"),
    "manufacturing": ("manufacturing engineer", "quality engineer", "production supervisor",
                      "process technician"),
    "consulting": ("management consultant", "strategy consultant", "business analyst",
                   "technology consultant"),
    "administration": ("office manager", "executive assistant", "administrative assistant",
                       "receptionist"),
    "research": ("research scientist", "research engineer", "lab technician", "research associate"),
    "security": ("security engineer", "security analyst", "penetration tester", "security architect"),
    "media": ("journalist", "copywriter", "video producer", "editor"),
    "construction": ("civil engineer", "project engineer", "site manager", "estimator"),
}

INDUSTRIES: tuple[str, ...] = (
    "software", "internet", "financial-services", "banking", "insurance", "hospital-health-care",
    "pharmaceuticals", "biotechnology", "retail", "consumer-goods", "automotive", "aerospace",
    "telecommunications", "media-production", "publishing", "higher-education", "primary-education",
    "government", "nonprofit", "legal-services", "management-consulting", "staffing-recruiting",
    "construction", "real-estate", "logistics", "manufacturing", "energy", "utilities", "hospitality",
    "food-beverages",
)

# Ordered levels: the seniority gap of the true model is the difference of these indices.
SENIORITY: tuple[str, ...] = ("intern", "entry", "associate", "mid-senior", "director", "executive")
SENIORITY_TITLE_PREFIX: tuple[str, ...] = ("intern", "junior", "", "senior", "director of", "head of")

REGIONS: tuple[str, ...] = (
    "us-san-francisco-bay-area", "us-new-york-city", "us-seattle", "us-los-angeles", "us-boston",
    "us-chicago", "us-austin", "us-denver", "us-atlanta", "us-washington-dc", "us-dallas", "us-houston",
    "us-miami", "us-philadelphia", "us-phoenix", "us-minneapolis", "us-san-diego", "us-portland",
    "us-detroit", "us-raleigh", "ca-toronto", "ca-vancouver", "ca-montreal", "gb-london", "gb-manchester",
    "ie-dublin", "de-berlin", "de-munich", "fr-paris", "nl-amsterdam", "es-madrid", "es-barcelona",
    "it-milan", "ch-zurich", "se-stockholm", "pl-warsaw", "in-bangalore", "in-hyderabad", "in-mumbai",
    "sg-singapore", "jp-tokyo", "cn-shanghai", "au-sydney", "au-melbourne", "br-sao-paulo",
    "mx-mexico-city", "ae-dubai", "il-tel-aviv", "za-johannesburg", "kr-seoul",
)

_SKILL_QUALIFIERS = (
    "applied", "advanced", "agile", "cloud", "clinical", "corporate", "data", "digital", "enterprise",
    "financial", "global", "industrial", "interactive", "lean", "mobile", "network", "operational",
    "predictive", "quantitative", "regulatory", "scientific", "strategic", "technical", "visual", "web",
    "distributed", "embedded", "statistical", "creative", "commercial",
)
_SKILL_NOUNS = (
    "analysis", "architecture", "auditing", "automation", "budgeting", "coaching", "compliance", "content",
    "databases", "debugging", "design", "forecasting", "governance", "infrastructure", "integration",
    "leadership", "modeling", "monitoring", "negotiation", "optimization", "planning", "procurement",
    "programming", "prototyping", "reporting", "research", "scheduling", "security", "storytelling",
    "testing", "training", "writing", "accounting", "marketing", "recruiting", "sales", "logistics",
    "pricing", "statistics", "visualization", "networking", "operations", "editing", "surveying",
    "drafting", "diagnostics", "pharmacology", "tutoring", "litigation", "estimation", "welding",
    "machining", "scripting", "virtualization", "cryptography", "photography", "animation", "translation",
    "mentoring", "onboarding", "underwriting", "valuation", "taxation", "payroll", "fundraising",
    "hospitality", "nursing", "radiology", "phlebotomy", "robotics", "calibration", "inspection",
    "permitting", "dispatch", "merchandising", "sourcing", "copywriting", "benchmarking", "facilitation",
    "moderation", "curation", "localization", "orchestration", "containerization", "kubernetes", "python",
    "java", "sql", "spark", "excel", "tableau", "salesforce", "sap", "figma", "autocad", "matlab", "react",
    "terraform", "linux", "go", "rust",
)


@dataclass(frozen=True)
class Catalog:
    """All vocabularies plus the derived index structures the generator samples from.

    Attributes:
        functions, industries, seniority, regions: category names; an entity stores the integer index.
        titles: every base title; ``title_function[t]`` is its function's index.
        function_titles: per function, the indices of its titles.
        skills: skill names (a few thousand, unique slugs).
        skill_cdf_by_function: ``[n_functions, n_skills]`` cumulative Zipf popularity of skills for members
            and jobs of each function (a skill popular in one function is rare in the others).
        industry_cdf_by_function: ``[n_functions, n_industries]`` cumulative industry mix per function.
        region_cdf: cumulative Zipf popularity of regions.
    """

    functions: tuple[str, ...]
    industries: tuple[str, ...]
    seniority: tuple[str, ...]
    regions: tuple[str, ...]
    titles: tuple[str, ...]
    title_function: np.ndarray
    function_titles: tuple[np.ndarray, ...]
    skills: tuple[str, ...]
    skill_cdf_by_function: np.ndarray
    industry_cdf_by_function: np.ndarray
    region_cdf: np.ndarray
    function_cdf: np.ndarray
    seniority_cdf: np.ndarray


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def build_catalog(seed: int, *, n_skills: int = 3000, skill_zipf: float = 1.05) -> Catalog:
    """Build the vocabularies and the per-function popularity tables for ``seed``.

    Skills are ``<qualifier>-<noun>`` slugs (plus the bare nouns) taken in a seeded order; each function
    owns a contiguous block of them that it ranks first, so skill overlap tracks function overlap while
    some skills (the globally popular bare nouns) are shared across functions.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA7]))
    functions = tuple(FUNCTION_TITLES)
    n_functions = len(functions)

    titles: list[str] = []
    title_function: list[int] = []
    function_titles: list[np.ndarray] = []
    for f_index, name in enumerate(functions):
        start = len(titles)
        titles.extend(FUNCTION_TITLES[name])
        title_function.extend([f_index] * len(FUNCTION_TITLES[name]))
        function_titles.append(np.arange(start, len(titles)))

    compound = [f"{q}-{n}" for q in _SKILL_QUALIFIERS for n in _SKILL_NOUNS]
    compound_order = rng.permutation(len(compound))
    n_compound = max(0, n_skills - len(_SKILL_NOUNS))
    skills = tuple(_SKILL_NOUNS) + tuple(compound[i] for i in compound_order[:n_compound])
    n_skills = len(skills)

    # Per function: own block first (Zipf over it), then everything else at a lower, shuffled popularity.
    block = np.array_split(np.arange(len(_SKILL_NOUNS), n_skills), n_functions)
    skill_cdf = np.empty((n_functions, n_skills))
    for f_index in range(n_functions):
        own = rng.permutation(block[f_index])
        shared_nouns = rng.permutation(len(_SKILL_NOUNS))[:20]
        rest = np.setdiff1d(np.arange(n_skills), np.concatenate([own, shared_nouns]))
        ranking = np.concatenate([own[:15], shared_nouns, own[15:], rng.permutation(rest)])
        probs = np.empty(n_skills)
        probs[ranking] = _zipf_weights(n_skills, skill_zipf)
        skill_cdf[f_index] = np.cumsum(probs)
    skill_cdf[:, -1] = 1.0

    # Each function concentrates on a few industries (Dirichlet with a small concentration).
    industry_mix = rng.dirichlet(np.full(len(INDUSTRIES), 0.3), size=n_functions) * 0.85 + 0.15 / len(
        INDUSTRIES
    )
    industry_cdf = np.cumsum(industry_mix, axis=1)
    industry_cdf[:, -1] = 1.0

    region_cdf = np.cumsum(_zipf_weights(len(REGIONS), 0.9)[rng.permutation(len(REGIONS))])
    region_cdf[-1] = 1.0
    function_cdf = np.cumsum(rng.dirichlet(np.full(n_functions, 4.0)))
    function_cdf[-1] = 1.0
    seniority_cdf = np.cumsum(np.array([0.04, 0.22, 0.26, 0.33, 0.11, 0.04]))
    seniority_cdf[-1] = 1.0

    return Catalog(
        functions=functions,
        industries=INDUSTRIES,
        seniority=SENIORITY,
        regions=REGIONS,
        titles=tuple(titles),
        title_function=np.asarray(title_function),
        function_titles=tuple(function_titles),
        skills=skills,
        skill_cdf_by_function=skill_cdf,
        industry_cdf_by_function=industry_cdf,
        region_cdf=region_cdf,
        function_cdf=function_cdf,
        seniority_cdf=seniority_cdf,
    )


def sample_categorical(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` indices from one cumulative distribution."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def sample_conditional(rng: np.random.Generator, cdfs: np.ndarray, groups: np.ndarray, draws: int = 1) -> np.ndarray:
    """Draw ``draws`` indices per row from the cumulative distribution ``cdfs[groups[row]]``.

    Vectorised by group: one ``searchsorted`` per group rather than per row. Returns ``[len(groups), draws]``.
    """
    out = np.empty((len(groups), draws), dtype=np.int64)
    u = rng.random((len(groups), draws))
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(cdfs.shape[0] + 1))
    for g in range(cdfs.shape[0]):
        rows = order[bounds[g] : bounds[g + 1]]
        if len(rows):
            out[rows] = np.searchsorted(cdfs[g], u[rows], side="right")
    return np.minimum(out, cdfs.shape[1] - 1)
