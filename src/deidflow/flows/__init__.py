"""Import paths into the Prefect flows (top-level `flows/`, installed beside deidflow) for
library code that must not depend on where the flows live."""
