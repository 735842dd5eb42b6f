/**
 * Standard services every Aegis gRPC server runs (DESIGN.md §4): grpc.health.v1 health checks
 * (grpc-health-check) and server reflection (@grpc/reflection, v1 and v1alpha), the latter fed
 * with the file descriptors protoc-gen-es embedded in the generated code, so `grpcurl` and
 * friends need no .proto files.
 */
import { toBinary } from '@bufbuild/protobuf';
import type { DescFile, DescService } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type { Server } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/** The serialized FileDescriptorProtos of the services' files and all their imports, deduplicated. */
export function fileDescriptorProtos(services: readonly DescService[]): Buffer[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile): void => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    f.dependencies.forEach(visit);
  };
  services.forEach((s) => visit(s.file));
  return [...seen.values()].map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
}

/**
 * Adds health and reflection to `server`. Every given service, and the server as a whole (the
 * empty name), start as SERVING; the returned implementation sets other statuses (e.g.
 * NOT_SERVING while draining). Reflection lists exactly the given services.
 */
export function addHealthAndReflection(server: Server, services: readonly DescService[]): HealthImplementation {
  const health = new HealthImplementation({ '': 'SERVING', ...Object.fromEntries(services.map((s) => [s.typeName, 'SERVING' as const])) });
  health.addToServer(server);
  const files = fileDescriptorProtos(services);
  const pkg = Object.fromEntries(services.map((s) => [s.typeName, { fileDescriptorProtos: files }])) as unknown as PackageDefinition;
  new ReflectionService(pkg, { services: services.map((s) => s.typeName) }).addToServer(server);
  return health;
}
