using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace Broker.Client;

/// <summary>
/// The listed brokers and one channel to each, opened on first use. Calls go to the current listener; after a
/// connection-level failure the caller moves on to the next (<see cref="MoveOnFrom"/>), so a listener that is down is
/// left for the others while it is down. Thread-safe.
/// </summary>
internal sealed class ListenerSet : IDisposable
{
    private readonly IReadOnlyList<Uri> _addresses;
    private readonly string? _apiKey;
    private readonly X509Certificate2Collection? _trustedRoots;
    private readonly GrpcChannel?[] _channels;
    private readonly Lock _lock = new();
    private int _current;
    private bool _disposed;

    public ListenerSet(IReadOnlyList<Uri> addresses, string? apiKey = null, X509Certificate2Collection? trustedRoots = null)
    {
        _apiKey = apiKey;
        _trustedRoots = trustedRoots;
        if (addresses.Count == 0)
            throw new ArgumentException("at least one listener is needed", nameof(addresses));
        _addresses = addresses;
        _channels = new GrpcChannel?[addresses.Count];
    }

    public int Count => _addresses.Count;

    /// <summary>The listener calls go to now, and its channel.</summary>
    public (int Index, GrpcChannel Channel) Current
    {
        get
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                int index = _current;
                return (index, _channels[index] ??= BrokerChannel.Create(_addresses[index], _apiKey, _trustedRoots));
            }
        }
    }

    public Uri AddressOf(int index) => _addresses[index];

    /// <summary>The listener at <paramref name="failedIndex"/> failed: move on to the next one, unless another caller already did.</summary>
    public void MoveOnFrom(int failedIndex)
    {
        lock (_lock)
        {
            if (_current == failedIndex)
                _current = (failedIndex + 1) % _addresses.Count;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var channel in _channels)
                channel?.Dispose();
        }
    }
}
