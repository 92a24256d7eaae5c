using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;

namespace Broker.Storage.Errors;

/// <summary>A failure with a stable <see cref="BrokerErrorCode"/> and a message fit to show a client.</summary>
public sealed class BrokerException(BrokerErrorCode code, string message, Exception? inner = null)
    : Exception(message, inner)
{
    /// <summary>The stable code of this failure.</summary>
    public BrokerErrorCode Code { get; } = code;
}

/// <summary>Throw helpers keep the throwing code off the hot paths that call them.</summary>
internal static class Throw
{
    [DoesNotReturn, StackTraceHidden]
    public static void Broker(BrokerErrorCode code, string message) => throw new BrokerException(code, message);

    [DoesNotReturn, StackTraceHidden]
    public static void TopicNotFound(string topic) =>
        throw new BrokerException(BrokerErrorCode.TopicNotFound, $"topic '{topic}' does not exist");
}
