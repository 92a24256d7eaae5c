using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using Google.Protobuf;
using global::Grpc.AspNetCore.Server.Model;
using global::Grpc.Core;

namespace Broker.Server.Grpc;

/// <summary>
/// Binds each service's methods like grpc-dotnet's own provider does (through the generated <c>BindService</c>), but
/// with a request deserializer that turns bytes that are not the method's protobuf message into INVALID_ARGUMENT with
/// error 1000. Why here: grpc-dotnet deserializes a unary request before any interceptor runs, and reports a parser
/// exception as UNKNOWN "Exception was thrown by handler." with an error-level log; a client's garbage is neither.
/// Registered in place of grpc-dotnet's provider (<see cref="Hosting.BrokerHost"/>), so each method is bound once.
/// </summary>
internal sealed class CheckedRequestMethodProvider<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.All)] TService>
    : IServiceMethodProvider<TService> where TService : class
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TService> context)
    {
        var bindMethod = FindBindMethod(typeof(TService));
        if (bindMethod is null)
            return;
        // The generated base class: BindService(ServiceBinderBase, TheServiceBase).
        var serviceBase = bindMethod.GetParameters()[1].ParameterType;
        bindMethod.Invoke(null, [new Binder(context, serviceBase), null]);
    }

    [UnconditionalSuppressMessage("Trimming", "IL2075", Justification = "Generated service bases are kept by their services.")]
    private static MethodInfo? FindBindMethod(Type serviceType)
    {
        for (Type? type = serviceType; type is not null; type = type.BaseType)
        {
            if (type.GetCustomAttribute<BindServiceMethodAttribute>(inherit: false) is { } bind)
                return bind.BindType.GetMethod(bind.BindMethodName, BindingFlags.Public | BindingFlags.Static, [typeof(ServiceBinderBase), type]);
        }
        return null;
    }

    /// <summary>The same method with a deserializer that reports unreadable bytes as the client's error.</summary>
    private static Method<TRequest, TResponse> Checked<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class where TResponse : class
    {
        var deserialize = method.RequestMarshaller.ContextualDeserializer;
        string messageType = typeof(TRequest).Name;
        var requests = Marshallers.Create(method.RequestMarshaller.ContextualSerializer, context =>
        {
            try
            {
                return deserialize(context);
            }
            catch (InvalidProtocolBufferException error)
            {
                throw BrokerStatus.UnreadableMessage(messageType, error);
            }
        });
        return new Method<TRequest, TResponse>(method.Type, method.ServiceName, method.Name, requests, method.ResponseMarshaller);
    }

    private sealed class Binder(ServiceMethodProviderContext<TService> context, Type serviceBase) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            context.AddUnaryMethod(Checked(method), Metadata(),
                Invoker<UnaryServerMethod<TService, TRequest, TResponse>>(method.Name, typeof(TRequest), typeof(ServerCallContext)));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddClientStreamingMethod(Checked(method), Metadata(),
                Invoker<ClientStreamingServerMethod<TService, TRequest, TResponse>>(method.Name, typeof(IAsyncStreamReader<TRequest>), typeof(ServerCallContext)));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddServerStreamingMethod(Checked(method), Metadata(),
                Invoker<ServerStreamingServerMethod<TService, TRequest, TResponse>>(method.Name, typeof(TRequest), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddDuplexStreamingMethod(Checked(method), Metadata(),
                Invoker<DuplexStreamingServerMethod<TService, TRequest, TResponse>>(method.Name,
                    typeof(IAsyncStreamReader<TRequest>), typeof(IServerStreamWriter<TResponse>), typeof(ServerCallContext)));

        // gRPC is POST only; grpc-dotnet's provider adds the same.
        private static List<object> Metadata() => [new Microsoft.AspNetCore.Routing.HttpMethodMetadata(["POST"], acceptCorsPreflight: true)];

        /// <summary>An open delegate to the service's override of the generated base method (an instance per call).</summary>
        private TDelegate Invoker<TDelegate>(string name, params Type[] parameters) where TDelegate : Delegate
        {
            var method = typeof(TService).GetMethod(name, BindingFlags.Public | BindingFlags.Instance, parameters);
            if (method is null || method.GetBaseDefinition().DeclaringType != serviceBase)
                throw new InvalidOperationException($"{typeof(TService).Name} has no method {name} of {serviceBase.Name}");
            return method.CreateDelegate<TDelegate>();
        }
    }
}
