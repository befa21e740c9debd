"""campaign-emotion: facial-expression analytics for campaign images (fer_core + Spark job + dashboards)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",  # CPU here; on a GPU executor install tensorflow[and-cuda]==2.21.0
    "keras>=3.10,<4",
    "numpy>=1.26,<3",
    "pyspark==4.3.0",
    "pyarrow>=17",
    "deltalake==1.6.6",
    "pandas>=2.2,<3",  # pyspark 4.3 warns on pandas 3
    "opencv-python-headless>=4.10,<5",  # 5.x ships no Haar cascades
    "pillow>=13",  # AVIF in the wheels
    "pillow-heif>=1.0,<2",  # HEIC/HEIF phone photos (fer_core.decode)
    "av==18.1.0",  # PyAV: FFmpeg in its wheel, decodes video posts from memory (fer_core.video)
    "plotly>=6,<8",
    "jinja2>=3.1",
    "pyyaml>=6",
    "fsspec>=2024.6",
    "s3fs>=2024.6",
    "psutil>=5.9",
    "scikit-learn>=1.4",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "moto[server]>=5",
        "boto3",
        "websocket-client>=1.7",  # drives headless Chromium over the DevTools protocol
        "playwright>=1.50",  # drives the system Chromium (executable_path) for the local page's tests
        "scikit-image>=0.24",  # ships real face photos (astronaut) for tests
        "scipy>=1.11",  # reference binomial test and Wilson interval for fer_core.metrics
        "polars>=1.0",  # a real third-party Parquet producer (large/view types) for the dump-reading tests
        "duckdb>=1.0",  # another one (COPY ... TO 'x.parquet')
    ],
    "bench": [
        "setuptools<81",  # fer imports pkg_resources
        # fer==25.10.3 itself is installed with --no-deps (its pins clash); see Makefile
    ],
    "gpu": ["tensorflow[and-cuda]==2.21.0"],
    "pack": ["venv-pack==0.2.0"],  # make pack: the environment shipped to cluster nodes (--archives)
}

setup(
    name="campaign-emotion",
    version="0.1.0",
    description="Facial-expression analytics for campaign images: RetinaFace + Keras emotion model on Spark, Delta tables, HTML dashboards",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["fer_core", "fer_core.*", "jobs", "jobs.*", "dashboards", "dashboards.*"]),
    package_data={
        "fer_core": ["pretrained/*.keras", "pretrained/*.json", "pretrained/*.md", "static/*"],
        "dashboards": ["templates/*", "static/*"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fer-core=fer_core.cli:main"]},
)
