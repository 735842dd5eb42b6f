/**
 * Standard services every Aegis gRPC server runs (DESIGN.md §4): grpc.health.v1 health checks
 * (grpc-health-check) and server reflection (@grpc/reflection, v1 and v1alpha), the latter fed
 * with the file descriptors protoc-gen-es embedded in the generated code, so `grpcurl` and
 * friends need no .proto files.
 */
import { toBinary } from '@bufbuild/protobuf';
import type { DescFile, DescService } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { status as Status, type MethodDefinition, type Server, type ServerUnaryCall, type ServerWritableStream, type ServiceDefinition, type ServiceError, type UntypedServiceImplementation, type sendUnaryData } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, service as healthService } from 'grpc-health-check';
import { AegisError, ErrorCode } from '../errors.js';
import { isUnparseable, lenient, unparseableError } from './service.js';
import { toServiceError } from './status.js';

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
  addHealth(server, health);
  const files = fileDescriptorProtos(services);
  const pkg = Object.fromEntries(services.map((s) => [s.typeName, { fileDescriptorProtos: files }])) as unknown as PackageDefinition;
  new ReflectionService(pkg, { services: services.map((s) => s.typeName) }).addToServer(server);
  return health;
}

/**
 * grpc-health-check's service with the Aegis error contract: a request that is not a
 * HealthCheckRequest is INVALID_ARGUMENT with the reason `invalid-argument` (grpc-js alone
 * answers INTERNAL without one), and its refusals carry a reason too (an unknown service name:
 * NOT_FOUND `not-found`, as the health protocol says, now with the reason).
 */
function addHealth(server: Server, health: HealthImplementation): void {
  let impl: UntypedServiceImplementation = {};
  health.addToServer({ addService: (_def: ServiceDefinition, handlers: UntypedServiceImplementation) => void (impl = handlers) } as unknown as Server);
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  const handlers: UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(healthService as unknown as Record<string, MethodDefinition<unknown, unknown>>)) {
    definition[name] = { ...method, requestDeserialize: lenient(method.requestDeserialize) };
    const key = Object.keys(impl).find((k) => k.toLowerCase() === name.toLowerCase());
    const handler = key === undefined ? undefined : impl[key];
    if (!handler) continue;
    handlers[name] = method.responseStream
      ? (call: ServerWritableStream<unknown, unknown>) => {
          if (isUnparseable(call.request)) return void call.emit('error', toServiceError(unparseableError()));
          (handler as (c: ServerWritableStream<unknown, unknown>) => void)(call);
        }
      : (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
          if (isUnparseable(call.request)) return callback(toServiceError(unparseableError()));
          (handler as (c: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => void)(call, (err, value) => callback(err ? withReason(err) : null, value));
        };
  }
  server.addService(definition as ServiceDefinition, handlers);
}

/** The health service's own refusals as Aegis statuses (code kept, reason added). */
function withReason(err: Partial<ServiceError>): ServiceError {
  const code = err.code === Status.NOT_FOUND ? ErrorCode.NotFound : err.code === Status.RESOURCE_EXHAUSTED ? ErrorCode.TooLarge : undefined;
  if (code === undefined) return err as ServiceError;
  return toServiceError(new AegisError(code, err.details ?? 'refused'));
}
