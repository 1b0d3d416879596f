"""The avatar gRPC service (`trillium.avatar.v1.AvatarService`)."""
