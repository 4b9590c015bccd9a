"""API roles: anonymous gets nothing, every role reads, operators and API clients write."""

from rest_framework import permissions

from billing import roles


class RolePermission(permissions.BasePermission):
    message = "Your role may only read."

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return roles.can_read(request.user)
        return roles.can_write(request.user)
