"""Objects a provider stores and a later call names (response ids) belong to the tenant that created them."""

from wrapper.ownership.ids import ObjectIds
from wrapper.ownership.step import OwnershipStep

__all__ = ["OwnershipStep", "ObjectIds"]
