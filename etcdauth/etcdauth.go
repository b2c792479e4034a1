// Package etcdauth sets up etcd's role-based access for lodestar, so that
// each registrar may write only its own service's keys and clients may
// only read:
//
//	role lodestar-registrar-<service>  readwrite  <prefix>/<service>/...
//	role lodestar-reader               read       <prefix>/...
//
// EnableAuth creates the root user and turns authentication on; Registrar
// and Reader create a role and a user holding it. Leases need no
// permission of their own: etcd lets a user revoke a lease only if it may
// write every key attached to it, which a registrar may. "lodestar auth"
// runs these.
//
// The passwords given here travel to etcd inside the requests: give a
// client that reaches etcd over TLS (https:// endpoints), as
// etcdclient.New insists on for its own password unless told the network
// is trusted.
package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lodestar-rpc/lodestar/registry"
)

// ReaderRole is the role of clients that discover services.
const ReaderRole = "lodestar-reader"

// RegistrarRole returns the role of the registrars of service.
func RegistrarRole(service string) string { return "lodestar-registrar-" + service }

// EnableAuth creates the root user with rootPassword (and the root role)
// if missing, and turns authentication on. cli must be allowed to do so:
// before auth is on, any client is.
func EnableAuth(ctx context.Context, cli *clientv3.Client, rootPassword string) error {
	if rootPassword == "" {
		return errors.New("etcdauth: the root user needs a password")
	}
	if err := ensureRole(ctx, cli, "root"); err != nil {
		return err
	}
	if err := ensureUser(ctx, cli, "root", rootPassword, "root"); err != nil {
		return err
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdauth: enable auth: %w", err)
	}
	return nil
}

// Registrar creates the role that may write service's keys under prefix
// (registry.DefaultPrefix when empty) and a user with password holding it.
func Registrar(ctx context.Context, cli *clientv3.Client, prefix, service, user, password string) error {
	if err := registry.ValidateService(service); err != nil {
		return fmt.Errorf("etcdauth: %w", err)
	}
	key := registry.ServicePrefix(orDefault(prefix), service)
	return grant(ctx, cli, RegistrarRole(service), key, clientv3.PermissionType(clientv3.PermReadWrite), user, password)
}

// Reader creates the role that may read every service under prefix
// (registry.DefaultPrefix when empty) and a user with password holding
// it.
func Reader(ctx context.Context, cli *clientv3.Client, prefix, user, password string) error {
	key := strings.TrimSuffix(orDefault(prefix), "/") + "/"
	return grant(ctx, cli, ReaderRole, key, clientv3.PermissionType(clientv3.PermRead), user, password)
}

func orDefault(prefix string) string {
	if prefix == "" {
		return registry.DefaultPrefix
	}
	return prefix
}

func grant(ctx context.Context, cli *clientv3.Client, role, key string, perm clientv3.PermissionType, user, password string) error {
	if user == "" || password == "" {
		return fmt.Errorf("etcdauth: role %s: a user name and a password are required", role)
	}
	if err := ensureRole(ctx, cli, role); err != nil {
		return err
	}
	if _, err := cli.RoleGrantPermission(ctx, role, key, clientv3.GetPrefixRangeEnd(key), perm); err != nil {
		return fmt.Errorf("etcdauth: grant %s on %s: %w", role, key, err)
	}
	return ensureUser(ctx, cli, user, password, role)
}

func ensureRole(ctx context.Context, cli *clientv3.Client, role string) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcdauth: add role %s: %w", role, err)
	}
	return nil
}

func ensureUser(ctx context.Context, cli *clientv3.Client, user, password, role string) error {
	if _, err := cli.UserAdd(ctx, user, password); err != nil {
		if !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("etcdauth: add user %s: %w", user, err)
		}
		if _, err := cli.UserChangePassword(ctx, user, password); err != nil {
			return fmt.Errorf("etcdauth: set password of %s: %w", user, err)
		}
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("etcdauth: grant role %s to %s: %w", role, user, err)
	}
	return nil
}
