from mflow_sbi.simulator import GoldData, Simulator, as_generator  # noqa: F401
