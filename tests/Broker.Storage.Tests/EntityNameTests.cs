using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class EntityNameTests
{
    [Theory]
    [InlineData("jobs")]
    [InlineData("estela.items-2024_v1")]
    [InlineData("jobs.dlq")]
    [InlineData("A")]
    public void Valid_names_pass(string name) => Assert.Null(EntityName.Validate(name));

    [Theory]
    [InlineData("")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData("a b")]
    [InlineData("jobs\0")]
    [InlineData("ä")]
    [InlineData("..\\x")]
    public void Invalid_names_fail_with_a_reason(string name) => Assert.NotNull(EntityName.Validate(name));

    [Fact]
    public void Names_longer_than_the_limit_fail()
    {
        Assert.Null(EntityName.Validate(new string('a', EntityName.MaxLength)));
        Assert.NotNull(EntityName.Validate(new string('a', EntityName.MaxLength + 1)));
    }
}
