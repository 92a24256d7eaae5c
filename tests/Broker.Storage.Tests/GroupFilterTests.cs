using System.Text;
using Broker.Storage.Groups;

namespace Broker.Storage.Tests;

public sealed class GroupFilterTests
{
    [Theory]
    [InlineData("orders.paid.eu", "orders.paid.eu", true)]
    [InlineData("orders.paid.eu", "orders.paid.us", false)]
    [InlineData("orders.*.eu", "orders.paid.eu", true)]
    [InlineData("orders.*.eu", "orders.eu", false)]
    [InlineData("orders.*.eu", "orders.paid.late.eu", false)]
    [InlineData("logs.#", "logs", true)]
    [InlineData("logs.#", "logs.a.b.c", true)]
    [InlineData("logs.#", "logsx.a", false)]
    [InlineData("#.error", "db.replica.error", true)]
    [InlineData("#.error", "error", true)]
    [InlineData("#", "", true)]
    [InlineData("*", "", true)]
    [InlineData("*", "a.b", false)]
    [InlineData("a.#.b.#.c", "a.x.b.y.z.c", true)]
    [InlineData("a.#.b.#.c", "a.x.c.b", false)]
    [InlineData("#.#.#.#.#.#.#.#.#.#.#.#.x", "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.y", false)]
    public void Key_patterns_follow_amqp_topic_matching(string pattern, string key, bool matches) =>
        Assert.Equal(matches, new GroupFilter([pattern], []).Matches(Encoding.UTF8.GetBytes(key), []));

    [Fact]
    public void Every_header_of_the_filter_must_be_there_with_its_value_and_any_pattern_may_match()
    {
        var filter = new GroupFilter(["a", "b.*"], [new("tier", "gold"), new("region", "eu")]);
        KeyValuePair<string, string>[] gold = [new("tier", "gold"), new("region", "eu"), new("other", "x")];

        Assert.True(filter.Matches("b.1"u8, gold));
        Assert.True(filter.Matches("a"u8, gold));
        Assert.False(filter.Matches("c"u8, gold));
        Assert.False(filter.Matches("a"u8, [new("tier", "gold")]));
        Assert.False(filter.Matches("a"u8, [new("tier", "Gold"), new("region", "eu")]));
        Assert.True(new GroupFilter([], [new("tier", "gold")]).Matches(default, gold));
    }

    [Fact]
    public void Filters_out_of_bounds_are_refused()
    {
        Assert.NotNull(new GroupFilter([""], []).Problem());
        Assert.NotNull(new GroupFilter([new string('a', 256)], []).Problem());
        Assert.NotNull(new GroupFilter([.. Enumerable.Range(0, 101).Select(i => $"k{i}")], []).Problem());
        Assert.NotNull(new GroupFilter([], [new("", "x")]).Problem());
        Assert.NotNull(new GroupFilter([], [new("a", "1"), new("a", "2")]).Problem());
        Assert.Null(new GroupFilter([new string('a', 255)], [new("a", "")]).Problem());
    }
}
